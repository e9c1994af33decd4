// Lets this crate's binaries and tests find libtorch (scripts/setup.sh's CPU view, which also
// holds the CUDA runtime stubs libtorch_cpu.so needs) without LD_LIBRARY_PATH. DT_RPATH rather
// than RUNPATH, so libtorch_cpu.so's own dependencies are found there too.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{dir}/lib");
    }
}
