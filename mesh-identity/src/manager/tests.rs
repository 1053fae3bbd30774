use std::time::{Duration, UNIX_EPOCH};

use super::rotation_time;

#[test]
fn rotates_at_half_the_lifetime_counted_from_issuance() {
    let issued = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let day = Duration::from_secs(86_400);
    // Rounding the end up to a whole second does not delay the rotation.
    let not_after = issued + day + Duration::from_millis(700);
    assert_eq!(rotation_time(issued, day, not_after), issued + day / 2);
}

#[test]
fn a_certificate_cut_short_by_the_ca_rotates_at_its_own_half_life() {
    let issued = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let day = Duration::from_secs(86_400);
    let ca_expiry = issued + Duration::from_secs(600);
    assert_eq!(
        rotation_time(issued, day, ca_expiry),
        issued + Duration::from_secs(300)
    );
    // Already past its end (a clock jump): due at once.
    assert_eq!(
        rotation_time(issued, day, issued - Duration::from_secs(1)),
        issued
    );
}
