//! The anchor's side of the `clock` bench: Linux's
//! `pvclock_clocksource_read` (arch/x86/kernel/pvclock.c), as a kernel
//! would write it in Rust: the version read with the low bit cleared and a
//! read barrier, the fields, `rdtsc_ordered` (LFENCE; RDTSC), the delta
//! scaled by `pvclock_scale_delta` (shift, then a 64x32-bit multiply
//! keeping bits 32 to 95), the version read again, the `TSC_STABLE`
//! shortcut past the global last value.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use pvkit_anchors::Work;
use pvkit_anchors::clock::{READS, check, publish, snapshot, tsc};
use pvkit_spec::clock::{PvClockSnapshot, PvClockVcpuTimeInfo, PvClockVcpuTimeInfo as Info};
use zerocopy::FromBytes;

/// `PVCLOCK_TSC_STABLE_BIT`.
const TSC_STABLE: u8 = 1;

/// `struct pvclock_vcpu_time_info`, aligned as kvmclock's per-CPU copy.
#[repr(C, align(32))]
struct Area(UnsafeCell<PvClockVcpuTimeInfo>);

impl Area {
    /// The field `offset` bytes in, as Linux reads one: a single native
    /// load (x86-64 is little-endian, as the struct).
    #[inline(always)]
    fn field<T: FromBytes>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= size_of::<PvClockVcpuTimeInfo>() && offset.is_multiple_of(align_of::<T>()));
        let at = self.0.get().cast::<u8>().wrapping_add(offset).cast::<T>();
        // SAFETY: `at` lies in the live struct (checked above), aligned for
        // `T` (the struct is 32-byte aligned), and any bits are a `T`; only
        // the host writes the struct, and a volatile load is not torn.
        unsafe { at.read_volatile() }
    }
}

/// `pvclock_clocksource_read`, with `valid_flags` = `TSC_STABLE`.
#[inline(never)]
fn pvclock_clocksource_read(src: &Area, last_value: &AtomicU64) -> u64 {
    let (ret, flags) = loop {
        let version = src.field::<u32>(offset_of!(Info, version)) & !1;
        compiler_fence(Ordering::Acquire);
        let tsc_timestamp = src.field::<u64>(offset_of!(Info, tsc_timestamp));
        let system_time = src.field::<u64>(offset_of!(Info, system_time));
        let mul = src.field::<u32>(offset_of!(Info, tsc_to_system_mul));
        let shift = src.field::<i8>(offset_of!(Info, tsc_shift));
        let tsc = rdtsc_ordered();
        let ret = system_time.wrapping_add(pvclock_scale_delta(tsc.wrapping_sub(tsc_timestamp), mul, shift));
        let flags = src.field::<u8>(offset_of!(Info, flags));
        compiler_fence(Ordering::Acquire);
        if version == src.field::<u32>(offset_of!(Info, version)) {
            break (ret, flags);
        }
    };
    if flags & TSC_STABLE != 0 {
        return ret;
    }
    let last = last_value.fetch_max(ret, Ordering::AcqRel);
    last.max(ret)
}

fn rdtsc_ordered() -> u64 {
    // SAFETY: LFENCE has no memory effects; it orders the loads before it.
    unsafe { core::arch::x86_64::_mm_lfence() };
    // SAFETY: RDTSC reads a counter; user space may.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[expect(clippy::cast_possible_truncation, reason = "bits 32 to 95 of the product, as Linux keeps them")]
fn pvclock_scale_delta(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let delta = if shift < 0 { delta >> shift.unsigned_abs() } else { delta << shift };
    ((u128::from(delta) * u128::from(mul_frac)) >> 32) as u64
}

struct Anchor {
    area: Box<Area>,
    last_value: AtomicU64,
    snap: PvClockSnapshot,
    sum: u64,
}

impl Anchor {
    fn new() -> Self {
        let area = Box::new(Area(UnsafeCell::new(PvClockVcpuTimeInfo::default())));
        let snap = snapshot(tsc());
        // SAFETY: the area is ours and nothing reads it yet.
        unsafe { publish(area.0.get(), snap) };
        Self { area, last_value: AtomicU64::new(0), snap, sum: 0 }
    }
}

impl Work for Anchor {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            self.sum = self.sum.wrapping_add(pvclock_clocksource_read(&self.area, &self.last_value));
        }
        black_box(self.sum);
        READS
    }

    fn summary(&self) -> String {
        check(self.snap, || pvclock_clocksource_read(&self.area, &self.last_value))
    }
}

fn main() {
    pvkit_anchors::serve(|case| (case == "read").then(|| Box::new(Anchor::new()) as Box<dyn Work>));
}
