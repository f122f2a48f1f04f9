//! Parses a `.cnn` file and prints its AST or its diagnostics (a debugging aid).

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: parse_file FILE.cnn");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("cannot read {path}: {error}");
            std::process::exit(2);
        }
    };
    let file = cnnc_syntax::SourceFile::from_bytes(path, bytes);
    match cnnc_syntax::parse(&file) {
        Ok(network) => println!("{network:#?}"),
        Err(errors) => {
            eprint!("{}", errors.render(&file, cnnc_syntax::RenderStyle::Plain));
            std::process::exit(1);
        }
    }
}
