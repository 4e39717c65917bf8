//! The files an operator names (kernels, disks, initrds): how to say what
//! one is when it is not the regular file pvkit needs.

use std::os::unix::fs::FileTypeExt;

/// What kind of file `meta` describes, for a refusal.
pub(crate) fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}
