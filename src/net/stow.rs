//! STOW-RS (DICOMweb Store, PS3.18 §10.5): one POST of `multipart/related;
//! type="application/dicom"` per file to `<url>/studies`.

use std::time::Duration;

/// A DICOMweb service and how to reach it.
#[derive(Debug, Clone)]
pub struct Service {
    pub url: String,
    /// HTTP Basic user and password.
    pub basic: Option<(String, String)>,
    pub timeout: Duration,
}

/// The part boundary: never found inside DICOM data by chance in practice, and checked.
const BOUNDARY: &str = "tracerd-stow-0f9d8c7b6a5e4d3c";

fn agent(timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

fn authorization(service: &Service) -> Option<String> {
    use base64::Engine;
    let (user, password) = service.basic.as_ref()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(format!("Basic {token}"))
}

fn studies_url(service: &Service) -> String {
    format!("{}/studies", service.url.trim_end_matches('/'))
}

/// Stores one Part-10 file. Success is HTTP 200 (every instance stored).
pub fn store(service: &Service, name: &str, part10: &[u8]) -> Result<(), String> {
    if part10
        .windows(BOUNDARY.len())
        .any(|w| w == BOUNDARY.as_bytes())
    {
        return Err(format!("{name}: holds the multipart boundary"));
    }
    let mut body = Vec::with_capacity(part10.len() + 256);
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(part10);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = agent(service.timeout)
        .post(studies_url(service))
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .header("Accept", "application/dicom+json");
    if let Some(auth) = authorization(service) {
        request = request.header("Authorization", auth);
    }
    let response = request
        .send(&body[..])
        .map_err(|e| format!("{name}: POST {}: {e}", studies_url(service)))?;
    match response.status().as_u16() {
        200 => Ok(()),
        code => Err(format!(
            "{name}: STOW-RS answered HTTP {code} (200 means stored)"
        )),
    }
}

/// Whether the service answers: a QIDO-RS query for one study. HTTP 2xx passes; 401 and 403
/// say the credentials are refused.
pub fn check(service: &Service) -> Result<u16, String> {
    let mut request = agent(service.timeout).get(format!("{}?limit=1", studies_url(service)));
    if let Some(auth) = authorization(service) {
        request = request.header("Authorization", auth);
    }
    let response = request
        .call()
        .map_err(|e| format!("GET {}: {e}", studies_url(service)))?;
    match response.status().as_u16() {
        code @ 200..=299 => Ok(code),
        code @ (401 | 403) => Err(format!(
            "answers, but refuses the credentials (HTTP {code})"
        )),
        code => Err(format!("answers HTTP {code} to a query for one study")),
    }
}
