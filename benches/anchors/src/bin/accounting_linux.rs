//! The anchor's side of the `accounting` bench: Linux's `kvm_steal_clock`
//! (arch/x86/kernel/kvm.c) written in Rust on the same area: the version,
//! a read barrier, the steal figure, a read barrier, again while the
//! version is odd or moved. No bound on the retries, no unregistered check.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::mem::offset_of;
use std::sync::atomic::{Ordering, compiler_fence};

use pvkit_anchors::Work;
use pvkit_anchors::accounting::{FIGURES, READS, publish};
use pvkit_spec::accounting::VcpuAccountingInfo;

/// The area, aligned as the spec asks.
#[repr(C, align(64))]
struct Area(UnsafeCell<VcpuAccountingInfo>);

impl Area {
    /// The field `offset` bytes in, as Linux reads one: a native load.
    #[inline(always)]
    fn field<T: zerocopy::FromBytes>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= size_of::<VcpuAccountingInfo>() && offset.is_multiple_of(align_of::<T>()));
        let at = self.0.get().cast::<u8>().wrapping_add(offset).cast::<T>();
        // SAFETY: `at` lies in the live area (checked above), aligned for
        // `T` (the area is 64-byte aligned), and any bits are a `T`; only the
        // host writes the area, and a volatile load is not torn.
        unsafe { at.read_volatile() }
    }
}

#[inline(never)]
fn kvm_steal_clock(src: &Area) -> u64 {
    loop {
        let version = src.field::<u32>(offset_of!(VcpuAccountingInfo, version));
        compiler_fence(Ordering::Acquire);
        let steal = src.field::<u64>(offset_of!(VcpuAccountingInfo, steal_ns));
        compiler_fence(Ordering::Acquire);
        if version & 1 == 0 && version == src.field::<u32>(offset_of!(VcpuAccountingInfo, version)) {
            return steal;
        }
    }
}

struct Anchor {
    area: Box<Area>,
    sum: u64,
}

impl Work for Anchor {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            self.sum = self.sum.wrapping_add(kvm_steal_clock(&self.area));
        }
        black_box(self.sum);
        READS
    }

    fn summary(&self) -> String {
        assert_eq!(kvm_steal_clock(&self.area), FIGURES.steal_ns);
        format!("steal {} ns", FIGURES.steal_ns)
    }
}

fn main() {
    pvkit_anchors::serve(|case| {
        (case == "steal").then(|| {
            let area = Box::new(Area(UnsafeCell::new(VcpuAccountingInfo::default())));
            // SAFETY: the area is ours and nothing reads it yet.
            unsafe { publish(area.0.get()) };
            Box::new(Anchor { area, sum: 0 }) as Box<dyn Work>
        })
    });
}
