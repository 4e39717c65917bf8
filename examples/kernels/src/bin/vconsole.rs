//! `vconsole`: the virtio console both ways: says it is ready, then echoes
//! each line it receives as `echo: <line>` until it receives `quit`.
#![no_std]
#![no_main]

use pvkit_guest::virtio::console::Console;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Console, &boot) else {
        println!("vconsole: no console device");
        return 2;
    };
    let mut console = match Console::<RtHal, _>::new(transport) {
        Ok(c) => c,
        Err(e) => {
            println!("vconsole: {e}");
            return 1;
        }
    };
    if console.write(b"vconsole: ready\n").is_err() {
        return 1;
    }
    let mut line = [0u8; 256];
    let mut len = 0;
    loop {
        let mut byte = [0u8; 1];
        match console.read(&mut byte) {
            Ok(0) => core::hint::spin_loop(),
            Ok(_) if byte[0] == b'\n' => {
                let text = &line[..len];
                if text == b"quit" {
                    let _ = console.write(b"vconsole: bye\n");
                    return 0;
                }
                let _ = console.write(b"echo: ");
                let _ = console.write(text);
                let _ = console.write(b"\n");
                len = 0;
            }
            Ok(_) => {
                if len < line.len() {
                    line[len] = byte[0];
                    len += 1;
                }
            }
            Err(e) => {
                println!("vconsole: {e}");
                return 1;
            }
        }
    }
}
