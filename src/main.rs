fn main() {
    std::process::exit(meshtrace::cli::main());
}
