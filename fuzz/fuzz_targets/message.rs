//! A message through MIME parsing, the content checks, the rules and the classifier's
//! tokenizer (the offline pipeline of `moat eval`): never a panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use moat::pipeline::envelope::Envelope;
use moat::pipeline::{MessageInput, Pipeline, Stage, StageInput};
use std::net::SocketAddr;
use std::sync::OnceLock;

fn pipeline() -> &'static (Pipeline, tokio::runtime::Runtime) {
    static P: OnceLock<(Pipeline, tokio::runtime::Runtime)> = OnceLock::new();
    P.get_or_init(|| {
        let config = moat::config::Config::parse("[bayes]\nenabled = false\n", std::path::Path::new("fuzz"))
            .expect("config");
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let mut config = config;
        config.rules.dir = Some(rules);
        let p = moat::app::build_offline_pipeline(&config, None).expect("pipeline");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (p, rt)
    })
}

fuzz_target!(|raw: &[u8]| {
    let (pipeline, rt) = pipeline();
    let Some(parsed) = mail_parser::MessageParser::default().parse(raw) else {
        return;
    };
    let _ = moat::bayes::tokens::tokens(&parsed);
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let envelope = Envelope::new(any, any);
    let input = StageInput {
        stage: Stage::Data,
        envelope: &envelope,
        recipient: None,
        message: Some(MessageInput { raw, parsed: &parsed }),
        score: 0.0,
    };
    let mut facts = moat::auth::AuthFacts::default();
    let _ = rt.block_on(pipeline.run(input, &mut facts));
});
