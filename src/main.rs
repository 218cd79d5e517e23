fn main() {
    meshtrace::install_crypto_provider();
}
