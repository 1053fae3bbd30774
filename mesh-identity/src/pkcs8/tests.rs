use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

use super::*;

#[test]
fn lengths_use_the_short_and_long_forms() {
    assert_eq!(tlv(0x04, &[]), [0x04, 0x00]);
    assert_eq!(tlv(0x04, &[7; 0x7f])[..2], [0x04, 0x7f]);
    assert_eq!(tlv(0x04, &[7; 0x80])[..3], [0x04, 0x81, 0x80]);
    assert_eq!(tlv(0x04, &[7; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
    for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1234] {
        let value = vec![9; len];
        let der = tlv(0x30, &value);
        assert_eq!(split_tlv(&der), Some((0x30, &value[..], &[][..])), "{len}");
    }
}

#[test]
fn truncated_or_odd_der_is_refused() {
    assert_eq!(split_tlv(&[]), None);
    assert_eq!(split_tlv(&[0x30]), None);
    assert_eq!(split_tlv(&[0x30, 0x05, 1, 2]), None);
    assert_eq!(
        split_tlv(&[0x30, 0x80]),
        None,
        "indefinite length is not DER"
    );
    assert_eq!(split_tlv(&[0x30, 0x82, 0x01]), None);
    assert_eq!(split_tlv(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
    assert_eq!(
        first_element(&tlv(0x31, &tlv(0x02, &[1]))),
        None,
        "not a SEQUENCE"
    );
}

#[test]
fn takes_the_algorithm_from_the_public_key_info() {
    let algorithm = tlv(0x30, &[0x06, 0x01, 0x2a, 0x05, 0x00]);
    let bits = tlv(0x03, &[0, 1, 2, 3]);
    let spki = tlv(0x30, &[algorithm.clone(), bits].concat());
    assert_eq!(first_element(&spki), Some(&algorithm[..]));

    let pkcs1 = tlv(0x30, &tlv(0x02, &[5]));
    let key = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1.clone()));
    let wrapped = to_pkcs8(&key, &spki).unwrap();
    let expected = tlv(
        0x30,
        &[tlv(0x02, &[0]), algorithm, tlv(0x04, &pkcs1)].concat(),
    );
    assert_eq!(wrapped.secret_pkcs8_der(), &expected[..]);

    assert!(to_pkcs8(&key, &[0x30, 0x03, 1]).is_err());
}
