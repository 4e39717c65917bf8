//! Each call's success and error paths, clause by clause.

use std::sync::Mutex;

use pvkit_spec::hypercall::HypercallArgs;

use super::*;
use crate::config::IMPLEMENTED_FEATURES;
use crate::test_utils::VecMemory;

#[derive(Default)]
struct Recorder {
    out: Mutex<Vec<u8>>,
    input: Mutex<Vec<u8>>,
    started: Mutex<Vec<(u32, u32, u32)>>,
    refuse_start: bool,
}

impl Platform for Recorder {
    fn console_write(&self, bytes: &[u8]) -> usize {
        self.out.lock().unwrap().extend_from_slice(bytes);
        bytes.len()
    }
    fn console_read(&self, buf: &mut [u8]) -> usize {
        let mut input = self.input.lock().unwrap();
        let n = buf.len().min(input.len());
        buf[..n].copy_from_slice(&input[..n]);
        input.drain(..n);
        n
    }
    fn start_vcpu(&self, vcpu: u32, entry: u32, arg: u32) -> Result<(), StartError> {
        if self.refuse_start {
            return Err(StartError("refused".into()));
        }
        self.started.lock().unwrap().push((vcpu, entry, arg));
        Ok(())
    }
}

const MEM: usize = 0x10000;

fn setup(vcpus: u32) -> (Dispatcher, VecMemory, Recorder) {
    (
        Dispatcher::new(HostConfig::new(vcpus, Features::all()), Services::default()),
        VecMemory::new(MEM),
        Recorder::default(),
    )
}

fn ret(d: &Dispatcher, m: &VecMemory, p: &Recorder, vcpu: u32, call: Hypercall, args: [u64; 4]) -> HypercallReturn {
    ret_raw(d, m, p, vcpu, call.raw(), args)
}

fn ret_raw(d: &Dispatcher, m: &VecMemory, p: &Recorder, vcpu: u32, number: u32, args: [u64; 4]) -> HypercallReturn {
    match d.handle(vcpu, HypercallArgs { number, args }, m, p) {
        Outcome::Return(r) => r,
        Outcome::Stop(s) => panic!("unexpected stop {s:?}"),
    }
}

fn err(e: HypercallError) -> u64 {
    e.raw()
}

#[test]
fn hc3_unknown_numbers_fail_and_leave_results() {
    let (d, m, p) = setup(1);
    for number in [0, 0x05, 0x12, 0x7fff_ffff, u32::MAX] {
        let r = ret_raw(&d, &m, &p, 0, number, [11, 22, 33, 44]);
        assert_eq!(r.status, err(HypercallError::UnknownCall), "{number:#x}");
        assert_eq!(r.results, [11, 22], "HC-6");
    }
    assert_eq!(d.stats().failures.load(Ordering::Relaxed), 5);
}

#[test]
fn hc20_query_matches_the_config() {
    let (d, m, p) = setup(2);
    let r = ret(&d, &m, &p, 0, Hypercall::Query, [0; 4]);
    assert_eq!(r.status, 0);
    assert_eq!(r.results, [0x0001_0001, (Features::CONSOLE | Features::VCPU_START | Features::HOST_REQUESTS).bits()]);
}

#[test]
fn config_never_offers_what_is_not_implemented() {
    let one = HostConfig::new(1, Features::all());
    assert_eq!(one.features, IMPLEMENTED_FEATURES - Features::VCPU_START);
    let none = Dispatcher::new(one, Services::default());
    assert_eq!(
        none.config().features,
        Features::CONSOLE | Features::HOST_REQUESTS,
        "features without their service are withdrawn; these two need none"
    );
    let two = HostConfig::new(2, Features::empty());
    assert_eq!(two.features, Features::VCPU_START);
}

#[test]
fn ver5_unoffered_features_are_unsupported() {
    let d = Dispatcher::new(HostConfig::new(1, Features::empty()), Services::default());
    let (m, p) = (VecMemory::new(MEM), Recorder::default());
    for call in [
        Hypercall::ConsoleWrite,
        Hypercall::ClockRegister,
        Hypercall::TimerSet,
        Hypercall::DeviceEnum,
        Hypercall::VcpuStart,
        Hypercall::Wallclock,
        Hypercall::HostRequest,
        Hypercall::AccountingRegister,
        Hypercall::AccountingDisable,
        Hypercall::RuntimeMeter,
    ] {
        let r = ret(&d, &m, &p, 0, call, [0x100, 1, 0, 0]);
        assert_eq!(r.status, err(HypercallError::Unsupported), "{call}");
    }
}

#[test]
fn hc21_negotiate() {
    let (d, m, p) = setup(1);
    let r = ret(&d, &m, &p, 0, Hypercall::Negotiate, [0x0001_0007, u64::MAX, 0, 0]);
    let offered = Features::CONSOLE | Features::HOST_REQUESTS;
    assert_eq!((r.status, r.results[0]), (0, offered.bits()));
    assert_eq!(d.negotiated(), offered);
    let r = ret(&d, &m, &p, 0, Hypercall::Negotiate, [0x0002_0000, 1, 0, 0]);
    assert_eq!(r.status, err(HypercallError::VersionMismatch));
    let r = ret(&d, &m, &p, 0, Hypercall::Negotiate, [1 << 40, 1, 0, 0]);
    assert_eq!(r.status, err(HypercallError::InvalidArgument));
}

#[test]
fn hc22_vcpu_query() {
    let (d, m, p) = setup(3);
    let r = ret(&d, &m, &p, 2, Hypercall::VcpuQuery, [0; 4]);
    assert_eq!((r.status, r.results), (0, [2, 3]));
}

#[test]
fn hc24_shutdown_takes_codes_up_to_255() {
    let (d, m, p) = setup(1);
    let stop = d.handle(0, HypercallArgs { number: Hypercall::Shutdown.raw(), args: [255, 0, 0, 0] }, &m, &p);
    assert_eq!(stop, Outcome::Stop(StopRequest::Shutdown { code: 255 }));
    let r = ret(&d, &m, &p, 0, Hypercall::Shutdown, [256, 0, 0, 0]);
    assert_eq!(r.status, err(HypercallError::InvalidArgument));
}

#[test]
fn hc26_panic_reads_what_it_can_and_always_stops() {
    let (d, m, p) = setup(1);
    m.write_bytes(0x2000, b"boom");
    let call = |args| d.handle(0, HypercallArgs { number: Hypercall::Panic.raw(), args }, &m, &p);
    assert_eq!(call([0x2000, 4, 7, 0]), Outcome::Stop(StopRequest::Panic { code: 7, message: Ok(b"boom".to_vec()) }));
    let Outcome::Stop(StopRequest::Panic { code, message }) = call([0x2000, 4, 0, 0]) else { panic!() };
    assert_eq!(code, 255);
    assert!(message.is_ok());
    let Outcome::Stop(StopRequest::Panic { message, .. }) = call([u64::MAX - 1, 4, 3, 0]) else { panic!() };
    assert!(message.is_err());
    let Outcome::Stop(StopRequest::Panic { message, .. }) = call([0, u64::MAX, 3, 0]) else { panic!() };
    assert_eq!(message.map(|m| m.len()), Ok(4096), "cut to PANIC_MESSAGE_MAX_LEN");
}

#[test]
fn hc30_console_write() {
    let (d, m, p) = setup(1);
    m.write_bytes(0x3000, b"hello");
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [0x3000, 5, 0, 0]);
    assert_eq!((r.status, r.results[0]), (0, 5));
    assert_eq!(*p.out.lock().unwrap(), b"hello");
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [0x3000, 0, 0, 0]);
    assert_eq!((r.status, r.results[0]), (0, 0));
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [0x3000, 4097, 0, 0]);
    assert_eq!(r.status, err(HypercallError::TooLarge));
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [MEM as u64 - 2, 5, 0, 0]);
    assert_eq!(r.status, err(HypercallError::BadAddress));
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [u64::MAX, 5, 0, 0]);
    assert_eq!(r.status, err(HypercallError::BadAddress), "HC-8: wrapping ranges");
    // HC-7: TOO_LARGE before BAD_ADDRESS.
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleWrite, [u64::MAX, 5000, 0, 0]);
    assert_eq!(r.status, err(HypercallError::TooLarge));
    assert_eq!(*p.out.lock().unwrap(), b"hello", "failed writes output nothing");
}

#[test]
fn hc32_console_read_never_waits() {
    let (d, m, p) = setup(1);
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleRead, [0x4000, 16, 0, 0]);
    assert_eq!((r.status, r.results[0]), (0, 0));
    p.input.lock().unwrap().extend_from_slice(b"abcdef");
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleRead, [0x4000, 4, 0, 0]);
    assert_eq!((r.status, r.results[0]), (0, 4));
    assert_eq!(m.read_bytes(0x4000, 5), b"abcd\0");
    let r = ret(&d, &m, &p, 0, Hypercall::ConsoleRead, [MEM as u64, 1, 0, 0]);
    assert_eq!(r.status, err(HypercallError::BadAddress));
    assert_eq!(*p.input.lock().unwrap(), b"ef", "refused reads consume nothing");
}

#[test]
fn boot8_vcpu_start() {
    let (d, m, p) = setup(2);
    let start = |vcpu, entry, arg| ret(&d, &m, &p, 0, Hypercall::VcpuStart, [vcpu, entry, arg, 0]).status;
    assert_eq!(start(1, 1 << 32, 0), err(HypercallError::InvalidArgument));
    assert_eq!(start(1, 0x1000, 1 << 32), err(HypercallError::InvalidArgument));
    assert_eq!(start(1, MEM as u64, 0), err(HypercallError::BadAddress));
    assert_eq!(start(2, 0x1000, 0), err(HypercallError::NotFound));
    assert_eq!(start(u64::MAX, 0x1000, 0), err(HypercallError::NotFound));
    assert_eq!(start(0, 0x1000, 0), err(HypercallError::Already), "vCPU 0 always has started");
    assert_eq!(start(1, 0x1000, 9), 0);
    assert_eq!(start(1, 0x1000, 9), err(HypercallError::Already));
    assert_eq!(*p.started.lock().unwrap(), vec![(1, 0x1000, 9)]);
}

#[test]
fn boot8_a_vcpu_the_vmm_failed_to_start_can_be_started_again() {
    let d = Dispatcher::new(HostConfig::new(2, Features::empty()), Services::default());
    let m = VecMemory::new(MEM);
    let refusing = Recorder { refuse_start: true, ..Default::default() };
    let r = ret(&d, &m, &refusing, 0, Hypercall::VcpuStart, [1, 0x1000, 0, 0]);
    assert_eq!(r.status, err(HypercallError::HostFailure));
    let r = ret(&d, &m, &Recorder::default(), 0, Hypercall::VcpuStart, [1, 0x1000, 0, 0]);
    assert_eq!(r.status, 0);
}

#[test]
fn irq_sources_check_their_features_first() {
    let (d, m, p) = setup(2);
    let irq = |src, vec, cpu| ret(&d, &m, &p, 0, Hypercall::IrqSetVector, [src, vec, cpu, 0]).status;
    assert_eq!(irq(7, 40, 0), err(HypercallError::InvalidArgument), "IRQ-2: undefined source");
    assert_eq!(irq(0, 40, 0), err(HypercallError::Unsupported), "IRQ-3: no TIMER");
    assert_eq!(irq(0x1_0000, 3, 9), err(HypercallError::Unsupported), "IRQ-3: no DEVICES");
    let without = Dispatcher::new(HostConfig::new(1, Features::CONSOLE), Services::default());
    let r = ret(&without, &m, &p, 0, Hypercall::IrqSetVector, [1, 0x41, 0, 0]);
    assert_eq!(r.status, err(HypercallError::Unsupported), "IRQ-3: no HOST_REQUESTS");
}

mod with_host_requests {
    use pvkit_spec::host_request::HostRequest;
    use pvkit_spec::irq::{SOURCE_HOST_REQUEST, Vector};

    use super::*;
    use crate::host_request::Delivery;
    use crate::timer::InterruptSink;

    #[derive(Default)]
    struct Lapics(Mutex<Vec<(u32, u8)>>);

    impl InterruptSink for Lapics {
        fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
            self.0.lock().unwrap().push((vcpu, vector.get()));
            Ok(())
        }
    }

    #[test]
    fn hc40_host_request_returns_each_request_once_from_any_vcpu() {
        let (d, m, p) = setup(2);
        assert!(d.config().features.contains(Features::HOST_REQUESTS));
        let r = ret(&d, &m, &p, 0, Hypercall::HostRequest, [5, 6, 0, 0]);
        assert_eq!((r.status, r.results), (0, [0, 0]), "none pending; r1 reserved zero");
        d.host_requests().post(HostRequest::Shutdown, &Lapics::default()).unwrap();
        let r = ret(&d, &m, &p, 1, Hypercall::HostRequest, [5, 6, 0, 0]);
        assert_eq!((r.status, r.results), (0, [1, 0]), "HC-41: taken by another vCPU than vCPU 0");
        let r = ret(&d, &m, &p, 0, Hypercall::HostRequest, [5, 6, 0, 0]);
        assert_eq!((r.status, r.results), (0, [0, 0]), "once only");
        d.host_requests().post(HostRequest::Reboot, &Lapics::default()).unwrap();
        let r = ret(&d, &m, &p, 0, Hypercall::HostRequest, [0; 4]);
        assert_eq!(r.results, [2, 0]);
    }

    #[test]
    fn irq8_the_host_request_source_routes_and_masks() {
        let (d, m, p) = setup(2);
        let irq = |vec, cpu| ret(&d, &m, &p, 0, Hypercall::IrqSetVector, [SOURCE_HOST_REQUEST, vec, cpu, 0]).status;
        let lapics = Lapics::default();
        assert_eq!(irq(31, 1), err(HypercallError::InvalidArgument), "IRQ-1");
        assert_eq!(irq(0x41, 2), err(HypercallError::NotFound), "IRQ-2");
        assert_eq!(d.host_requests().route(), None, "masked until set, and refused calls change nothing");
        assert_eq!(d.host_requests().post(HostRequest::Shutdown, &lapics), Ok(Delivery::Pending));
        assert_eq!(irq(0x41, 1), 0);
        let vector = Vector::new(0x41).unwrap();
        assert_eq!(d.host_requests().post(HostRequest::Shutdown, &lapics), Ok(Delivery::Raised { vcpu: 1, vector }));
        assert_eq!(irq(0x42, 0), 0, "one route for the machine: the new one replaces it");
        d.host_requests().post(HostRequest::Reboot, &lapics).unwrap();
        assert_eq!(irq(0, 0), 0, "vector 0 masks");
        d.host_requests().post(HostRequest::Shutdown, &lapics).unwrap();
        assert_eq!(*lapics.0.lock().unwrap(), [(1, 0x41), (0, 0x42)]);
        let r = ret(&d, &m, &p, 0, Hypercall::HostRequest, [0; 4]);
        assert_eq!(r.results, [1, 0], "HC-41: the latest request, pending while masked");
    }
}

#[test]
fn yield_succeeds_and_keeps_registers() {
    let (d, m, p) = setup(1);
    let r = ret(&d, &m, &p, 0, Hypercall::Yield, [5, 6, 0, 0]);
    assert_eq!((r.status, r.results), (0, [5, 6]));
}

mod with_clock_and_timers {
    use std::sync::Arc;

    use pvkit_spec::irq::Vector;

    use super::*;
    use crate::clock::{ClockSample, PvClock, TimeSource};
    use crate::timer::Timers;

    struct Frozen;

    impl TimeSource for Frozen {
        fn sample(&self) -> ClockSample {
            ClockSample { tsc: 1_000, mono_ns: 1_000 }
        }
        fn wall_ns(&self) -> u64 {
            1_800_000_000_000_000_000
        }
    }

    fn setup(stable: bool) -> (Dispatcher, Arc<Timers>, VecMemory, Recorder) {
        let clock = Arc::new(PvClock::new(Arc::new(Frozen), 1_000_000_000, &[0, 0], stable));
        let timers = Arc::new(Timers::new(2));
        let services = Services { clock: Some(clock), timers: Some(Arc::clone(&timers)), devices: None };
        (
            Dispatcher::new(HostConfig::new(2, Features::all()), services),
            timers,
            VecMemory::new(MEM),
            Recorder::default(),
        )
    }

    #[test]
    fn the_clock_features_follow_the_services() {
        let (d, ..) = setup(true);
        assert!(d.config().features.contains(Features::CLOCK | Features::CLOCK_TSC_STABLE | Features::TIMER));
        let (d, ..) = setup(false);
        assert!(!d.config().features.contains(Features::CLOCK_TSC_STABLE));
        let clock_only = Services { clock: setup(true).0.services.clock.clone(), timers: None, devices: None };
        let d = Dispatcher::new(HostConfig::new(1, Features::all()), clock_only);
        assert!(d.config().features.contains(Features::WALLCLOCK) && !d.config().features.contains(Features::TIMER));
    }

    #[test]
    fn clk1_clock_register_checks_alignment_then_address() {
        let (d, _, m, p) = setup(true);
        let reg = |gpa| ret(&d, &m, &p, 1, Hypercall::ClockRegister, [gpa, 0, 0, 0]).status;
        assert_eq!(reg(0x1004), err(HypercallError::Misaligned));
        assert_eq!(reg(MEM as u64), err(HypercallError::BadAddress));
        assert_eq!(reg(u64::MAX - 31), err(HypercallError::BadAddress));
        assert_eq!(reg(0x1000), 0);
        assert_eq!(m.read_bytes(0x1000, 4), 2u32.to_le_bytes(), "published with an even version");
        assert_eq!(ret(&d, &m, &p, 1, Hypercall::ClockDisable, [0; 4]).status, 0);
    }

    #[test]
    fn clk10_wallclock() {
        let (d, _, m, p) = setup(true);
        let r = ret(&d, &m, &p, 0, Hypercall::Wallclock, [0; 4]);
        assert_eq!((r.status, r.results), (0, [1_800_000_000_000_000_000, 0]));
    }

    #[test]
    fn tmr_set_cancel_and_vector() {
        let (d, timers, m, p) = setup(true);
        let call = |vcpu, c, args| ret(&d, &m, &p, vcpu, c, args);
        assert_eq!(call(1, Hypercall::TimerSet, [5_000, 0, 0, 0]).status, 0);
        assert_eq!(timers.next_deadline(), Some(5_000));
        assert_eq!(call(1, Hypercall::TimerCancel, [0; 4]).results[0], 1);
        assert_eq!(call(1, Hypercall::TimerCancel, [0; 4]).results[0], 0);
        let irq = |src, vec, cpu| call(0, Hypercall::IrqSetVector, [src, vec, cpu, 0]).status;
        assert_eq!(irq(0, 31, 1), err(HypercallError::InvalidArgument), "IRQ-1");
        assert_eq!(irq(0, 256, 1), err(HypercallError::InvalidArgument), "IRQ-1");
        assert_eq!(irq(0, 0x40, 2), err(HypercallError::NotFound), "IRQ-2");
        assert_eq!(irq(0x1_0000, 0x40, 0), err(HypercallError::Unsupported), "IRQ-3: no DEVICES");
        assert_eq!(irq(0, 0x40, 1), 0);
        call(1, Hypercall::TimerSet, [10, 0, 0, 0]);
        assert_eq!(timers.fire_due(10), vec![(1, Vector::new(0x40))]);
        assert_eq!(irq(0, 0, 1), 0, "vector 0 masks");
        call(1, Hypercall::TimerSet, [10, 0, 0, 0]);
        assert_eq!(timers.fire_due(10), vec![(1, None)]);
    }

    #[test]
    fn accounting_is_offered_with_the_clock_only() {
        let (d, ..) = setup(true);
        assert!(d.config().features.contains(Features::ACCOUNTING));
        let none = Dispatcher::new(HostConfig::new(1, Features::ACCOUNTING), Services::default());
        assert!(!none.config().features.contains(Features::ACCOUNTING), "figures in PV-clock time need a clock");
    }

    #[test]
    fn acct1_register_checks_overlap_then_alignment_then_address() {
        let (d, _, m, p) = setup(true);
        let call = |vcpu, c, gpa| ret(&d, &m, &p, vcpu, c, [gpa, 0, 0, 0]).status;
        assert_eq!(call(0, Hypercall::ClockRegister, 0x1020), 0);
        let reg = |vcpu, gpa| call(vcpu, Hypercall::AccountingRegister, gpa);
        assert_eq!(reg(1, 0x1000), err(HypercallError::InvalidArgument), "over vCPU 0's clock struct");
        assert_eq!(reg(1, 0x1008), err(HypercallError::InvalidArgument), "over it and misaligned: HC-7 order");
        assert_eq!(reg(1, 0x2020), err(HypercallError::Misaligned));
        assert_eq!(reg(1, 0x2fe0), err(HypercallError::Misaligned), "it would straddle a page");
        assert_eq!(reg(1, MEM as u64), err(HypercallError::BadAddress));
        assert_eq!(reg(1, MEM as u64 - 32), err(HypercallError::Misaligned));
        assert_eq!(reg(1, u64::MAX - 63), err(HypercallError::BadAddress), "wraps past 2^64");
        assert_eq!(reg(1, 0x2000), 0);
        assert_eq!(reg(0, 0x2000), err(HypercallError::InvalidArgument), "over vCPU 1's area");
        assert_eq!(reg(1, 0x1001), err(HypercallError::InvalidArgument));
        assert_eq!(d.accounting().area(1), Some(0x2000), "a refused registration keeps the earlier one");
        assert_eq!(reg(1, 0x2000), 0, "a vCPU may register its own area again");
        assert_eq!(m.read_bytes(0x2000, 4), 2u32.to_le_bytes(), "written, version even (ACCT-2)");
        assert_eq!(reg(0, 0x2040), 0, "the next 64 bytes are free");
    }

    #[test]
    fn acct2_a_clock_registered_over_an_area_ends_it() {
        let (d, _, m, p) = setup(true);
        let call = |vcpu, c, gpa| ret(&d, &m, &p, vcpu, c, [gpa, 0, 0, 0]).status;
        assert_eq!(call(1, Hypercall::AccountingRegister, 0x3000), 0);
        assert_eq!(call(0, Hypercall::AccountingRegister, 0x3040), 0);
        assert_eq!(call(0, Hypercall::ClockRegister, 0x3020), 0, "CLOCK_REGISTER itself is unchanged");
        assert_eq!((d.accounting().area(1), d.accounting().area(0)), (None, Some(0x3040)));
        let clock = m.read_bytes(0x3020, 32);
        d.accounting().update(1, crate::accounting::RunSample { run_ns: 7, ..Default::default() }, 9, &m).unwrap();
        assert_eq!(m.read_bytes(0x3020, 32), clock, "the clock struct is not written by the accounting");
    }

    #[test]
    fn acct9_disable_always_succeeds_and_stops_the_writes() {
        let (d, _, m, p) = setup(true);
        let call = |c, gpa| ret(&d, &m, &p, 0, c, [gpa, 0, 0, 0]).status;
        assert_eq!(call(Hypercall::AccountingDisable, 0), 0, "nothing registered");
        assert_eq!(call(Hypercall::AccountingRegister, 0x4000), 0);
        assert_eq!(call(Hypercall::AccountingDisable, 0), 0);
        let before = m.read_bytes(0x4000, 64);
        d.accounting().update(0, crate::accounting::RunSample { run_ns: 5, ..Default::default() }, 100, &m).unwrap();
        assert_eq!(m.read_bytes(0x4000, 64), before);
        assert_eq!(d.accounting().figures(0).map(|f| f.run_ns), Ok(5), "the figures go on");
    }

    #[test]
    fn acct10_the_meter_is_the_run_time_of_every_vcpu() {
        let (d, _, m, p) = setup(true);
        let sample = |run_ns| crate::accounting::RunSample { run_ns, steal_ns: 3, ..Default::default() };
        let a = d.accounting();
        a.update(0, sample(0), 0, &m).unwrap();
        a.update(1, sample(0), 0, &m).unwrap();
        a.update(0, sample(40), 100, &m).unwrap();
        a.update(1, sample(2), 100, &m).unwrap();
        let r = ret(&d, &m, &p, 1, Hypercall::RuntimeMeter, [0xaa, 0xbb, 0, 0]);
        assert_eq!((r.status, r.results), (0, [42, 0]), "no vCPU registered an area; r1 is zero");
    }
}

mod with_devices {
    use std::sync::Arc;

    use pvkit_spec::device::{DeviceDescriptor, Transport};
    use pvkit_spec::irq::Vector;
    use zerocopy::FromBytes;
    use zerocopy::little_endian::{U32, U64};

    use super::*;
    use crate::irq::{DeviceRoutes, Route};

    fn setup() -> (Dispatcher, Arc<DeviceRoutes>, VecMemory, Recorder) {
        let descriptor = |i: u32| DeviceDescriptor {
            mmio_base: U64::new(0xd000_0000 + u64::from(i) * 0x200),
            mmio_size: U32::new(0x200),
            gsi: U32::new(5 + i),
            device_id: U32::new(2),
            transport: U32::new(Transport::VirtioMmio.raw()),
        };
        let routes = Arc::new(DeviceRoutes::new(&[5, 6]));
        let devices = Devices { descriptors: vec![descriptor(0), descriptor(1)], routes: Arc::clone(&routes) };
        let services = Services { devices: Some(devices), ..Services::default() };
        (
            Dispatcher::new(HostConfig::new(2, Features::all()), services),
            routes,
            VecMemory::new(MEM),
            Recorder::default(),
        )
    }

    #[test]
    fn dev1_device_enum() {
        let (d, _, m, p) = setup();
        assert!(d.config().features.contains(Features::DEVICES));
        let call = |index, gpa| ret(&d, &m, &p, 0, Hypercall::DeviceEnum, [index, gpa, 0, 0]);
        assert_eq!(call(0, 0x1004).status, err(HypercallError::Misaligned));
        assert_eq!(call(0, MEM as u64 - 16).status, err(HypercallError::BadAddress));
        let r = call(1, 0x1000);
        assert_eq!((r.status, r.results[0]), (0, 2));
        let got = DeviceDescriptor::read_from_bytes(&m.read_bytes(0x1000, 24)).unwrap();
        assert_eq!((got.mmio_base.get(), got.gsi.get()), (0xd000_0200, 6));
        m.write_bytes(0x2000, &[0xaa; 24]);
        let r = call(2, 0x2000);
        assert_eq!((r.status, r.results[0]), (0, 2), "an index past the end writes nothing");
        assert_eq!(m.read_bytes(0x2000, 24), vec![0xaa; 24]);
    }

    #[test]
    fn irq5_device_sources_route_to_a_vector() {
        let (d, routes, m, p) = setup();
        let irq = |src, vec, cpu| ret(&d, &m, &p, 0, Hypercall::IrqSetVector, [src, vec, cpu, 0]).status;
        assert_eq!(irq(0x1_0002, 0x50, 0), err(HypercallError::NotFound), "IRQ-3: no device 2");
        assert_eq!(irq(0x1_0001, 0x50, 1), 0);
        assert_eq!(routes.route(1), Some(Route::Msi { vcpu: 1, vector: Vector::new(0x50).unwrap() }));
        assert_eq!(irq(0x1_0001, 0, 1), 0);
        assert_eq!(routes.route(1), Some(Route::Gsi(6)), "masking restores the GSI");
    }
}

#[test]
fn hc25_reboot_never_returns() {
    let (d, m, p) = setup(1);
    let out = d.handle(0, HypercallArgs { number: Hypercall::Reboot.raw(), args: [0; 4] }, &m, &p);
    assert_eq!(out, Outcome::Stop(StopRequest::Reboot));
}
