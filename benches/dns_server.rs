//! The test suite's authoritative DNS server (hickory, the zones of tests/fixtures/zones plus a
//! root zone, so every other name gets NXDOMAIN with an SOA, which resolvers cache) as a
//! process for the bench/ scripts. Prints `dns: listening on ADDR` and serves until killed.
//!
//!   cargo bench --ignore-rust-version --bench dns_server

#[path = "../tests/it/support/dns.rs"]
#[allow(dead_code)]
mod dns;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = dns::TestDns::fixtures(Vec::new()).await;
        println!("dns: listening on {}", server.addr);
        std::future::pending::<()>().await;
    });
}
