//! Compiles every `.proto` under `shop/` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`. The same descriptor set feeds code generation and is written to
//! `OUT_DIR` for gRPC server reflection, so reflection always describes exactly what was compiled.

use std::path::{Path, PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect_protos(&root.join("shop"), &mut files)?;
    files.sort();

    let fds = protox::compile(&files, [root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("shop_descriptor.bin"), fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    // `prost::Name` impls give every event its fully qualified protobuf name
    // (`shop.order.v1.OrderPlaced`), which is what goes into the CloudEvents `ce_type` header.
    config.enable_type_names();
    tonic_prost_build::configure().compile_fds_with_config(fds, config)?;

    println!("cargo:rerun-if-changed=shop");
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
