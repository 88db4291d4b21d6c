//! The SMTP command parser: any line gives a command or a reply, never a panic; a command
//! that parses carries no CR, LF or NUL in its arguments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use moat::smtp::command::Command;

fuzz_target!(|line: &[u8]| {
    if let Ok(cmd) = Command::parse(line) {
        let text = format!("{cmd:?}");
        assert!(!text.contains('\0'), "{text}");
    }
});
