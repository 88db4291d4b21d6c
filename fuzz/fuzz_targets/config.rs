//! Config and rule-file parsing: any text gives a value or an error with a message, never a
//! panic. The first byte picks the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        0 => {
            if let Ok(c) = moat::config::Config::parse(&text, Path::new("fuzz.toml")) {
                let _ = c.validate();
            }
        }
        1 => {
            let src = moat::rules::engine::Source {
                label: "fuzz.toml".into(),
                text: text.into_owned(),
            };
            let _ = moat::rules::engine::compile(&[src], &HashSet::new());
        }
        2 => {
            let _ = moat::rules::symbols::SymbolTable::parse(&text, "symbols.toml");
        }
        3 => {
            let _ = moat::rules::dnsbl::parse(&text, "dnsbl.toml");
        }
        4 => {
            let _ = moat::config::lists::parse(&text, "list", which & 0x80 != 0);
        }
        _ => {
            let _ = moat::rules::meta::parse(&text);
        }
    }
});
