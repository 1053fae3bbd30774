//! Which built-in workload a container image runs as: Istio's Bookinfo images
//! (`docker.io/istio/examples-bookinfo-<service>-<version>`) get the Bookinfo app of that
//! service, every other image the generic workload (`mesh-agent app http`). Pure: the
//! image name alone decides.
use crate::app::reviews::Stars;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Productpage,
    Details,
    Reviews(Stars),
    Ratings,
    /// Any other image.
    Generic,
}

impl Role {
    pub fn for_image(image: &str) -> Role {
        // `registry/path/name:tag@digest` → `name`.
        let name = image.rsplit('/').next().unwrap_or(image);
        let name = name.split(['@', ':']).next().unwrap_or(name);
        let Some(service) = name.strip_prefix("examples-bookinfo-") else {
            return Role::Generic;
        };
        match service {
            "productpage-v1" => Role::Productpage,
            s if s.starts_with("details-") => Role::Details,
            "reviews-v1" => Role::Reviews(Stars::None),
            "reviews-v2" => Role::Reviews(Stars::Black),
            "reviews-v3" => Role::Reviews(Stars::Red),
            // ratings-v2 and its database variants answer the same stars.
            s if s.starts_with("ratings-") => Role::Ratings,
            _ => Role::Generic,
        }
    }

    /// The `mesh-agent app` subcommand and its role-specific arguments.
    pub fn app_args(self) -> Vec<&'static str> {
        match self {
            Role::Productpage => vec!["productpage"],
            Role::Details => vec!["details"],
            Role::Reviews(Stars::None) => vec!["reviews", "--stars", "none"],
            Role::Reviews(Stars::Black) => vec!["reviews", "--stars", "black"],
            Role::Reviews(Stars::Red) => vec!["reviews", "--stars", "red"],
            Role::Ratings => vec!["ratings"],
            Role::Generic => vec!["http"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Productpage => "bookinfo productpage",
            Role::Details => "bookinfo details",
            Role::Reviews(Stars::None) => "bookinfo reviews v1",
            Role::Reviews(Stars::Black) => "bookinfo reviews v2",
            Role::Reviews(Stars::Red) => "bookinfo reviews v3",
            Role::Ratings => "bookinfo ratings",
            Role::Generic => "generic http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookinfo_images_get_their_app_and_others_the_generic_one() {
        let role = Role::for_image;
        assert_eq!(
            role("docker.io/istio/examples-bookinfo-productpage-v1:1.20.1"),
            Role::Productpage
        );
        assert_eq!(role("istio/examples-bookinfo-details-v1"), Role::Details);
        assert_eq!(
            role("docker.io/istio/examples-bookinfo-reviews-v2:1.20.1"),
            Role::Reviews(Stars::Black)
        );
        assert_eq!(
            role("examples-bookinfo-reviews-v3@sha256:abc"),
            Role::Reviews(Stars::Red)
        );
        assert_eq!(
            role("istio/examples-bookinfo-ratings-v2-mysql:1.0"),
            Role::Ratings
        );
        assert_eq!(role("istio/examples-bookinfo-mongodb:1.0"), Role::Generic);
        assert_eq!(role("registry:5000/acme/car:v2"), Role::Generic);
        assert_eq!(role("nginx"), Role::Generic);
    }
}
