//! Making certificates with rcgen: a cluster or test CA, and node or client certificates signed
//! by it (`mpreg tls ca`, `mpreg tls issue`; the test harness). Keys are ECDSA P-256.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// A certificate authority that signs node and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: Pem,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("making a certificate: {0}")]
pub struct MintError(#[from] rcgen::Error);

fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Authority, MintError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = named(common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params.clone(), key)?;
        let pem = Pem {
            cert: ca.pem(),
            key: ca.key().serialize_pem(),
        };
        let key = KeyPair::from_pem(&pem.key)?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// A CA from its certificate and key (PEM), to sign more certificates.
    pub fn from_pem(cert: &str, key: &str) -> Result<Authority, MintError> {
        let signing = KeyPair::from_pem(key)?;
        let issuer = Issuer::from_ca_cert_pem(cert, signing)?;
        Ok(Authority {
            issuer,
            pem: Pem {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
        })
    }

    /// The CA's own certificate and key.
    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also the common name),
    /// good for a server and a client both (a node is each to its peers).
    pub fn issue(&self, names: &[String]) -> Result<Pem, MintError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = named(names.first().map_or("mpreg", String::as_str));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}
