//! [`Pvkit`]: the calls a guest makes, with their arguments checked before
//! and their results checked after.

use pvkit_spec::device::DeviceDescriptor;
use pvkit_spec::host_request::HostRequest;
use pvkit_spec::hypercall::{HypercallArgs, PANIC_MESSAGE_MAX_LEN};
use pvkit_spec::{AbiVersion, Features, Hypercall};

use crate::accounting::AccountingArea;
use crate::clock::ClockArea;
use crate::discovery::Found;
use crate::error::Error;
use crate::gate::Gate;
use crate::translate::{Translate, page_pieces};

/// How many times `console_write_all` retries a host that took no bytes.
const CONSOLE_RETRIES: u32 = 64;

/// A pvkit host, ready to call.
#[derive(Clone, Copy, Debug)]
pub struct Pvkit<G, T> {
    found: Found,
    gate: G,
    translate: T,
}

impl<G: Gate, T: Translate> Pvkit<G, T> {
    /// A handle on the host `found` describes, calling through `gate` and
    /// translating buffers with `translate`.
    ///
    /// # Safety
    ///
    /// `gate` must be the gate of the host `found` describes, and `translate`
    /// must be the translation of every address space this handle is used
    /// in: the host reads and writes the physical addresses it gives.
    pub unsafe fn new(found: Found, gate: G, translate: T) -> Self {
        Self { found, gate, translate }
    }

    /// What discovery found.
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// The features the host offers.
    pub fn features(&self) -> Features {
        self.found.leaves.features
    }

    fn require(&self, feature: Features, name: &'static str) -> Result<(), Error> {
        if self.features().contains(feature) { Ok(()) } else { Err(Error::NotOffered(name)) }
    }

    /// Makes a call that names no guest memory.
    fn call(&self, call: Hypercall, args: [u64; 4]) -> Result<[u64; 2], Error> {
        // SAFETY: the calls made through here name no guest memory and start
        // no code; `call_with_memory` and `vcpu_start` cover the others.
        unsafe { self.call_unchecked(call, args) }
    }

    /// # Safety
    ///
    /// Any memory the call names must be valid for the host to access as the
    /// call says.
    unsafe fn call_unchecked(&self, call: Hypercall, args: [u64; 4]) -> Result<[u64; 2], Error> {
        // SAFETY: forwarded from the caller.
        let ret = unsafe { self.gate.call(HypercallArgs { number: call.raw(), args }) };
        Error::check(ret.status).map(|()| ret.results)
    }

    fn phys(&self, addr: usize) -> Result<u64, Error> {
        self.translate.virt_to_phys(addr).ok_or(Error::Untranslatable { addr })
    }

    /// `QUERY`: the host's version and features, as it reports them now.
    pub fn query(&self) -> Result<(AbiVersion, Features), Error> {
        let [version, features] = self.call(Hypercall::Query, [0; 4])?;
        let version =
            u32::try_from(version).map_err(|_| Error::Protocol { call: "QUERY", what: "version above 32 bits" })?;
        Ok((AbiVersion::from_raw(version), Features::from_bits_truncate(features)))
    }

    /// `NEGOTIATE`: tells the host which features this guest will use;
    /// returns those the host accepted.
    pub fn negotiate(&self, wanted: Features) -> Result<Features, Error> {
        let [accepted, _] =
            self.call(Hypercall::Negotiate, [pvkit_spec::ABI_VERSION.to_raw().into(), wanted.bits(), 0, 0])?;
        let accepted = Features::from_bits_retain(accepted);
        if !wanted.contains(accepted) {
            return Err(Error::Protocol { call: "NEGOTIATE", what: "accepted a feature that was not asked for" });
        }
        Ok(accepted)
    }

    /// `VCPU_QUERY`: the calling vCPU's index and the vCPU count.
    pub fn vcpu_query(&self) -> Result<(u32, u32), Error> {
        let [index, count] = self.call(Hypercall::VcpuQuery, [0; 4])?;
        let bad = Error::Protocol { call: "VCPU_QUERY", what: "index not below the count" };
        let (index, count) = (u32::try_from(index).map_err(|_| bad)?, u32::try_from(count).map_err(|_| bad)?);
        if index >= count {
            return Err(bad);
        }
        Ok((index, count))
    }

    /// `YIELD`.
    pub fn yield_now(&self) -> Result<(), Error> {
        self.call(Hypercall::Yield, [0; 4]).map(drop)
    }

    /// `SHUTDOWN`: stops the machine with `code`. Returns only if the host
    /// refused, with the reason.
    pub fn shutdown(&self, code: u8) -> Error {
        match self.call(Hypercall::Shutdown, [code.into(), 0, 0, 0]) {
            Err(e) => e,
            Ok(_) => Error::Protocol { call: "SHUTDOWN", what: "returned success" },
        }
    }

    /// `REBOOT`. Returns only if the host refused.
    pub fn reboot(&self) -> Error {
        match self.call(Hypercall::Reboot, [0; 4]) {
            Err(e) => e,
            Ok(_) => Error::Protocol { call: "REBOOT", what: "returned success" },
        }
    }

    /// `PANIC`: reports `message` and stops the machine with `code` (1 to
    /// 255). The host reads at most 4096 bytes of the message, and only the
    /// part that is physically contiguous. Returns only if the host refused.
    pub fn panic(&self, message: &[u8], code: u8) -> Error {
        let start = message.as_ptr() as usize;
        let Ok(phys) = self.phys(start) else {
            return self.panic_at(0, 0, code);
        };
        // The longest prefix whose pages are contiguous in physical memory.
        let mut len = 0usize;
        let cap = usize::try_from(PANIC_MESSAGE_MAX_LEN).unwrap_or(usize::MAX);
        for (piece, piece_len) in page_pieces(start, message.len().min(cap)) {
            // Pieces start at or after `start`; an address past 64 bits is
            // no continuation of anything.
            let expected = u64::try_from(piece.saturating_sub(start)).ok().and_then(|off| phys.checked_add(off));
            if expected.is_none() || self.translate.virt_to_phys(piece) != expected {
                break;
            }
            // Never saturates: the pieces sum to at most `message.len()`.
            len = len.saturating_add(piece_len);
        }
        self.panic_at(phys, len, code)
    }

    fn panic_at(&self, phys: u64, len: usize, code: u8) -> Error {
        // SAFETY: the host only reads the message range, which lies in a
        // borrowed slice (or is empty).
        match unsafe { self.call_unchecked(Hypercall::Panic, [phys, len as u64, code.into(), 0]) } {
            Err(e) => e,
            Ok(_) => Error::Protocol { call: "PANIC", what: "returned success" },
        }
    }

    /// `CONSOLE_WRITE`: writes as much of `bytes` as the host takes; returns
    /// the count.
    pub fn console_write(&self, bytes: &[u8]) -> Result<usize, Error> {
        self.require(Features::CONSOLE, "CONSOLE")?;
        let base = bytes.as_ptr() as usize;
        let mut done = 0;
        for (addr, len) in page_pieces(base, bytes.len()) {
            let phys = self.phys(addr)?;
            // SAFETY: the host reads `len` bytes at `phys`, which back a piece
            // of `bytes`, borrowed for the call.
            let [taken, _] = unsafe { self.call_unchecked(Hypercall::ConsoleWrite, [phys, len as u64, 0, 0])? };
            let taken = usize::try_from(taken).ok().filter(|&t| t <= len);
            let taken = taken.ok_or(Error::Protocol { call: "CONSOLE_WRITE", what: "took more than it was given" })?;
            // Never saturates: at most `bytes.len()` in all.
            done = taken.saturating_add(done);
            if taken < len {
                break;
            }
        }
        Ok(done)
    }

    /// Writes all of `bytes`, retrying what the host did not take (clause HC-31).
    pub fn console_write_all(&self, mut bytes: &[u8]) -> Result<(), Error> {
        let mut retries = 0u32;
        while !bytes.is_empty() {
            let n = self.console_write(bytes)?;
            if n == 0 {
                retries = retries.saturating_add(1);
                if retries > CONSOLE_RETRIES {
                    return Err(Error::Protocol { call: "CONSOLE_WRITE", what: "took no bytes, repeatedly" });
                }
                self.yield_now()?;
            }
            // `console_write` took at most `bytes.len()`.
            bytes = bytes.get(n..).unwrap_or_default();
        }
        Ok(())
    }

    /// `CONSOLE_READ`: reads pending input into `buf` without waiting;
    /// returns the count, 0 when nothing is pending.
    pub fn console_read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.require(Features::CONSOLE, "CONSOLE")?;
        let base = buf.as_mut_ptr() as usize;
        let mut done = 0;
        for (addr, len) in page_pieces(base, buf.len()) {
            let phys = self.phys(addr)?;
            // SAFETY: the host writes at most `len` bytes at `phys`, which back
            // a piece of `buf`, borrowed mutably for the call.
            let [got, _] = unsafe { self.call_unchecked(Hypercall::ConsoleRead, [phys, len as u64, 0, 0])? };
            let got = usize::try_from(got).ok().filter(|&g| g <= len);
            let got = got.ok_or(Error::Protocol { call: "CONSOLE_READ", what: "wrote more than the buffer" })?;
            // Never saturates: at most `buf.len()` in all.
            done = got.saturating_add(done);
            if got < len {
                break;
            }
        }
        Ok(done)
    }

    /// `CLOCK_REGISTER`: asks the host to keep `area` current as the calling
    /// vCPU's clock struct (clause CLK-2). Each vCPU registers its own area.
    pub fn clock_register(&self, area: &'static ClockArea) -> Result<(), Error> {
        self.require(Features::CLOCK, "CLOCK")?;
        let phys = self.phys(area.as_ptr() as usize)?;
        // SAFETY: the host writes the 32-byte area, which is 'static memory the
        // guest only reads through the seqlock protocol.
        unsafe { self.call_unchecked(Hypercall::ClockRegister, [phys, 0, 0, 0]) }.map(drop)
    }

    /// `CLOCK_DISABLE`: the host stops writing the calling vCPU's struct.
    pub fn clock_disable(&self) -> Result<(), Error> {
        self.require(Features::CLOCK, "CLOCK")?;
        self.call(Hypercall::ClockDisable, [0; 4]).map(drop)
    }

    /// `WALLCLOCK`: UTC nanoseconds since 1970 and the PV-clock time of the same instant.
    pub fn wallclock(&self) -> Result<(u64, u64), Error> {
        self.require(Features::WALLCLOCK, "WALLCLOCK")?;
        let [utc, pv] = self.call(Hypercall::Wallclock, [0; 4])?;
        Ok((utc, pv))
    }

    /// `ACCOUNTING_REGISTER`: asks the host to keep `area` current with the
    /// calling vCPU's run, steal and halted time (clause ACCT-2). Each vCPU
    /// registers its own area; the figures count from the vCPU's start, not
    /// from the registration (ACCT-4).
    pub fn accounting_register(&self, area: &'static AccountingArea) -> Result<(), Error> {
        self.require(Features::ACCOUNTING, "ACCOUNTING")?;
        let phys = self.phys(area.as_ptr() as usize)?;
        // SAFETY: the host writes the 64-byte area, which is 'static memory
        // the guest only reads through the seqlock protocol.
        unsafe { self.call_unchecked(Hypercall::AccountingRegister, [phys, 0, 0, 0]) }.map(drop)
    }

    /// `ACCOUNTING_DISABLE`: the host stops writing the calling vCPU's area.
    pub fn accounting_disable(&self) -> Result<(), Error> {
        self.require(Features::ACCOUNTING, "ACCOUNTING")?;
        self.call(Hypercall::AccountingDisable, [0; 4]).map(drop)
    }

    /// `RUNTIME_METER`: the vCPU nanoseconds the machine has used since it
    /// was created, summed over its vCPUs (clause ACCT-10); it never goes
    /// back (ACCT-11). r1, reserved, is ignored (GEN-2).
    pub fn runtime_meter(&self) -> Result<u64, Error> {
        self.require(Features::ACCOUNTING, "ACCOUNTING")?;
        let [meter, _] = self.call(Hypercall::RuntimeMeter, [0; 4])?;
        Ok(meter)
    }

    /// `TIMER_SET`: arms the calling vCPU's one-shot timer for `deadline`
    /// (PV-clock nanoseconds), replacing any armed one.
    pub fn timer_set(&self, deadline: u64) -> Result<(), Error> {
        self.require(Features::TIMER, "TIMER")?;
        self.call(Hypercall::TimerSet, [deadline, 0, 0, 0]).map(drop)
    }

    /// `TIMER_CANCEL`: disarms the calling vCPU's timer; whether one was armed.
    pub fn timer_cancel(&self) -> Result<bool, Error> {
        self.require(Features::TIMER, "TIMER")?;
        match self.call(Hypercall::TimerCancel, [0; 4])? {
            [0, _] => Ok(false),
            [1, _] => Ok(true),
            _ => Err(Error::Protocol { call: "TIMER_CANCEL", what: "result neither 0 nor 1" }),
        }
    }

    /// `IRQ_SET_VECTOR` for the timer of `vcpu`: `Some(vector)` (32 to 255)
    /// delivers it there, `None` masks it.
    pub fn set_timer_vector(&self, vcpu: u32, vector: Option<u8>) -> Result<(), Error> {
        self.require(Features::TIMER, "TIMER")?;
        let vector = vector.map_or(pvkit_spec::irq::VECTOR_MASKED, u64::from);
        self.call(Hypercall::IrqSetVector, [pvkit_spec::irq::SOURCE_TIMER, vector, vcpu.into(), 0]).map(drop)
    }

    /// `HOST_REQUEST`: takes the request the host has pending, if any: a
    /// shutdown or a reboot the guest should carry out in an orderly way
    /// (clause HC-43). Each request is returned once. A code this version
    /// does not know counts as no request (HC-43), and r1, reserved, is
    /// ignored (GEN-2).
    pub fn host_request(&self) -> Result<Option<HostRequest>, Error> {
        self.require(Features::HOST_REQUESTS, "HOST_REQUESTS")?;
        let [code, _] = self.call(Hypercall::HostRequest, [0; 4])?;
        Ok(HostRequest::from_result(code).unwrap_or(None))
    }

    /// `IRQ_SET_VECTOR` for host requests: `Some(vector)` (32 to 255) raises
    /// it on `vcpu` for each request the host posts, `None` masks it. Call
    /// [`Pvkit::host_request`] once after routing, for a request posted
    /// before (clause HC-42).
    pub fn set_host_request_vector(&self, vcpu: u32, vector: Option<u8>) -> Result<(), Error> {
        self.require(Features::HOST_REQUESTS, "HOST_REQUESTS")?;
        let vector = vector.map_or(pvkit_spec::irq::VECTOR_MASKED, u64::from);
        self.call(Hypercall::IrqSetVector, [pvkit_spec::irq::SOURCE_HOST_REQUEST, vector, vcpu.into(), 0]).map(drop)
    }

    /// `DEVICE_ENUM`: the device count, and device `index`'s descriptor when
    /// there is such a device. Descriptors with a transport this version does
    /// not know are passed on; the caller checks them (clause DEV-4).
    pub fn device_enum(&self, index: u64) -> Result<(u64, Option<DeviceDescriptor>), Error> {
        self.require(Features::DEVICES, "DEVICES")?;
        // 32-byte aligned: the 24 bytes never cross a page, and meet the
        // host's 8-byte alignment (clause DEV-1).
        #[repr(C, align(32))]
        struct Slot(DeviceDescriptor);
        let mut slot = Slot(DeviceDescriptor::default());
        let phys = self.phys(&raw mut slot as usize)?;
        // SAFETY: the host writes 24 bytes into `slot`, a local of that size.
        let [count, _] = unsafe { self.call_unchecked(Hypercall::DeviceEnum, [index, phys, 0, 0]) }?;
        // SAFETY: read back what the host wrote, past the compiler's view.
        let descriptor = unsafe { core::ptr::read_volatile(&raw const slot.0) };
        Ok((count, (index < count).then_some(descriptor)))
    }

    /// `VCPU_START`: starts vCPU `vcpu` at the 32-bit physical `entry`, in
    /// the PVH entry state, with `arg` in EBX and `vcpu` in ESI.
    ///
    /// # Safety
    ///
    /// `entry` must be code that can run as that vCPU's first instruction in
    /// the PVH entry state.
    pub unsafe fn vcpu_start(&self, vcpu: u32, entry: u32, arg: u32) -> Result<(), Error> {
        self.require(Features::VCPU_START, "VCPU_START")?;
        // SAFETY: forwarded from the caller.
        unsafe { self.call_unchecked(Hypercall::VcpuStart, [vcpu.into(), entry.into(), arg.into(), 0]) }.map(drop)
    }
}

#[cfg(test)]
mod tests;
