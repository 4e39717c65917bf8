//! `panic`: panics, to show that the host reports it and stops with a failure.
#![no_std]
#![no_main]

use rt::{Boot, println};

rt::entry!(main);

fn main(_boot: Boot) -> u8 {
    println!("about to panic");
    let answer = core::hint::black_box(41) + 1;
    panic!("the answer is {answer}, and this kernel gives up");
}
