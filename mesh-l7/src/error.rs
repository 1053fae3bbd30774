//! Why a routing table could not be built from a snapshot. The caller keeps serving the
//! previous table and reports this; every variant names the VirtualService (or
//! DestinationRule) and the field, as the configuration crate's errors do.

/// A snapshot the engine refuses.
#[derive(Debug, thiserror::Error)]
pub enum L7ConfigError {
    #[error("VirtualService {virtual_service}: {field}: invalid regex {pattern:?}: {source}")]
    Regex {
        /// `namespace/name`.
        virtual_service: String,
        /// The field path, e.g. `spec.http[0].match[1].uri.regex`.
        field: String,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error(
        "VirtualService {virtual_service}: {field}: delegate {delegate} does not exist (a delegate is a VirtualService without hosts)"
    )]
    MissingDelegate {
        virtual_service: String,
        field: String,
        /// `namespace/name` of the missing delegate.
        delegate: String,
    },
    #[error(
        "VirtualService {virtual_service}: {field}: delegate {delegate} delegates again; Istio allows one level"
    )]
    NestedDelegate {
        virtual_service: String,
        field: String,
        delegate: String,
    },
    #[error("VirtualService {virtual_service}: {field}: {message}")]
    Invalid {
        virtual_service: String,
        field: String,
        message: String,
    },
}
