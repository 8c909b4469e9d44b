//! `zmanager keys`: CurveZMQ key pairs for the node and its services, and
//! HTTP bearer tokens for services.

use std::path::PathBuf;
use std::process::ExitCode;

use zmanager::security;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make a key pair: NAME.key (both keys, readable by you only: the
    /// node's `[security] key_file`, or a service's own) and NAME.pub (the
    /// public key, to give the other side). Prints the public key.
    New {
        /// Where the files go, without extension (`keys/ada` makes
        /// `keys/ada.key` and `keys/ada.pub`). Existing files are never
        /// overwritten.
        name: PathBuf,
    },
    /// Make an HTTP bearer token: NAME.token (the token, readable by you
    /// only: the service sends it as `Authorization: Bearer <token>`).
    /// Prints its digest, the `http_token` line of the service's
    /// `[[security.service]]` entry.
    Token {
        /// The file, without extension (`keys/ada` makes `keys/ada.token`).
        /// An existing file is never overwritten.
        name: PathBuf,
    },
    /// Print the public key of a key file.
    Show {
        /// A `.key` file.
        file: PathBuf,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::New { name } => {
            let public = security::write_new_pair(&name).map_err(anyhow::Error::msg)?;
            println!("public_key = \"{}\"", security::z85(&public));
        }
        Command::Token { name } => {
            let mut path = name.into_os_string();
            path.push(".token");
            let digest =
                security::token::write_new_token(path.as_ref()).map_err(anyhow::Error::msg)?;
            println!("http_token = \"{digest}\"");
        }
        Command::Show { file } => {
            let (public, _) = security::read_key_file(&file).map_err(anyhow::Error::msg)?;
            println!("public_key = \"{}\"", security::z85(&public));
        }
    }
    Ok(ExitCode::SUCCESS)
}
