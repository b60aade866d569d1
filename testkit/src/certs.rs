//! Throwaway TLS certificates for test servers, made with the `openssl`
//! command: a CA, a server certificate for 127.0.0.1 and localhost, and a
//! client certificate for mutual TLS. They are valid for one day.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestkitError;
use crate::binaries::{Binary, find_binary};

/// The files [`make_certificates`] writes, all PEM.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA's certificate: what a client trusts.
    pub ca_cert: PathBuf,
    /// The server's certificate (IP 127.0.0.1, DNS localhost) and key.
    pub server_cert: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the same CA, for mutual TLS.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
}

/// Makes a CA, and a server and a client certificate signed by it, in `dir`.
pub fn make_certificates(dir: &Path) -> Result<Certificates, TestkitError> {
    find_binary(Binary::Openssl)?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| TestkitError::io(format!("writing {name}"), e))
    };
    write(
        "server.cnf",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )?;
    write("client.cnf", "extendedKeyUsage=clientAuth\n")?;
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=testkit-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            &key[..],
        ]
        .concat(),
    )?;
    for (who, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("client", "/CN=testkit-client"),
    ] {
        let (key_file, csr, cert, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
            format!("{who}.cnf"),
        );
        openssl(
            dir,
            &[
                &["req", "-subj", subject, "-keyout", &key_file, "-out", &csr],
                &key[..],
            ]
            .concat(),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(Certificates {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    })
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), TestkitError> {
    let output = Command::new(find_binary(Binary::Openssl)?)
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| TestkitError::io("running openssl", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestkitError::io(
            format!("openssl {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&output.stderr).to_string()),
        ))
    }
}
