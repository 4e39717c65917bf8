//! `pvkit`, the reference hypervisor (see the `pvkit_vmm` library).

fn main() -> std::process::ExitCode {
    pvkit_vmm::main()
}
