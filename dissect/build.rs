// Lets this crate's tests, benches and examples find libtorch at run time without LD_LIBRARY_PATH.
fn main() {
    for var in ["LIBTORCH_LIB", "DND_CUDA_LIB"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(dir) = std::env::var(var) {
            let lib = if var == "LIBTORCH_LIB" { format!("{dir}/lib") } else { dir };
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        }
    }
}
