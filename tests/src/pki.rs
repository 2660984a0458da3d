//! A throwaway certificate authority for TLS tests: a CA certificate and node or client
//! certificates signed by it, written as PEM files into a temporary folder.

use std::path::PathBuf;

use anyhow::Result;
use mpreg::tls::mint::Authority;

/// A CA and the folder its files live in.
pub struct TestPki {
    dir: tempfile::TempDir,
    authority: Authority,
    /// The CA certificate (PEM): what clients trust.
    pub ca: PathBuf,
}

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let authority = Authority::new(name)?;
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, &authority.pem().cert)?;
        Ok(TestPki { dir, authority, ca })
    }

    /// A certificate for `localhost` and `127.0.0.1`, written as `{stem}.pem` / `{stem}.key`.
    pub fn issue(&self, stem: &str) -> Result<Issued> {
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let pem = self.authority.issue(&names)?;
        let issued = Issued {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        std::fs::write(&issued.cert, pem.cert)?;
        std::fs::write(&issued.key, pem.key)?;
        Ok(issued)
    }

    /// Issues a certificate over the files of `to` (a renewal in place: key first, then the
    /// certificate, as a certificate manager would).
    pub fn reissue_into(&self, to: &Issued) -> Result<()> {
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let pem = self.authority.issue(&names)?;
        std::fs::write(&to.key, pem.key)?;
        std::fs::write(&to.cert, pem.cert)?;
        Ok(())
    }
}
