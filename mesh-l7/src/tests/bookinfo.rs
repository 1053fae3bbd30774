//! The Bookinfo routing files and the seed tutorials' gateway routes.

use super::*;

#[test]
fn all_v1_sends_every_request_to_v1() {
    let table = bookinfo(&["virtual-service-all-v1.yaml"]);
    let (state, mut rng, none) = (LbState::new(), rng(), HeaderMap::new());
    for service in ["productpage", "reviews", "ratings", "details"] {
        for i in 0..200 {
            let user = headers(&[("end-user", if i % 2 == 0 { "jason" } else { "x" })]);
            let h = if i % 3 == 0 { &none } else { &user };
            let (subset, workload) = upstream(&table, &get(service, "/", h), &state, &mut rng);
            assert_eq!(subset.as_deref(), Some("v1"), "{service}");
            assert_eq!(workload, format!("default/{service}-v1-0"));
        }
    }
}

#[test]
fn reviews_80_20_splits_80_percent_to_v1() {
    let table = bookinfo(&["virtual-service-reviews-80-20.yaml"]);
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let n = 10_000;
    let mut v1 = 0;
    for _ in 0..n {
        match upstream(
            &table,
            &get("reviews:9080", "/reviews/0", &h),
            &state,
            &mut rng,
        ) {
            (Some(s), w) if s == "v1" => {
                assert_eq!(w, "default/reviews-v1-0");
                v1 += 1;
            }
            (Some(s), w) => assert_eq!((s.as_str(), w.as_str()), ("v2", "default/reviews-v2-0")),
            other => panic!("{other:?}"),
        }
    }
    let share = f64::from(v1) / f64::from(n) * 100.0;
    assert!((77.0..=83.0).contains(&share), "v1 got {share}%");
}

#[test]
fn jason_goes_to_v2_and_everyone_else_to_v3() {
    let table = bookinfo(&["virtual-service-reviews-jason-v2-v3.yaml"]);
    let (state, mut rng) = (LbState::new(), rng());
    let jason = headers(&[("end-user", "jason")]);
    let other = headers(&[("end-user", "Jason")]);
    let none = HeaderMap::new();
    for _ in 0..50 {
        let subset = |h: &HeaderMap, rng: &mut fastrand::Rng| {
            upstream(&table, &get("reviews", "/reviews/0", h), &state, rng).0
        };
        assert_eq!(subset(&jason, &mut rng).as_deref(), Some("v2"));
        assert_eq!(
            subset(&other, &mut rng).as_deref(),
            Some("v3"),
            "exact is case-sensitive"
        );
        assert_eq!(subset(&none, &mut rng).as_deref(), Some("v3"));
    }
    // The FQDN and the namespace-qualified name find the same VirtualService.
    for host in ["reviews.default", "reviews.default.svc.cluster.local:9080"] {
        let (subset, _) = upstream(&table, &get(host, "/", &jason), &state, &mut rng);
        assert_eq!(subset.as_deref(), Some("v2"), "{host}");
    }
}

#[test]
fn ratings_delay_holds_jason_for_7_seconds_only() {
    let table = bookinfo(&["virtual-service-ratings-test-delay.yaml"]);
    let (state, mut rng) = (LbState::new(), rng());
    let jason = headers(&[("end-user", "jason")]);
    let none = HeaderMap::new();
    for _ in 0..100 {
        let d = table.decide(
            &get("ratings", "/ratings/0", &jason),
            &state,
            &mut rng,
            Instant::now(),
        );
        let f = d.forward().expect("forwarded");
        assert_eq!(f.delay, Some(Duration::from_secs(7)));
        assert_eq!(f.cluster.subset.as_deref(), Some("v1"));
        assert_eq!(f.route.virtual_service, Some("default/ratings"));
        let d = table.decide(
            &get("ratings", "/ratings/0", &none),
            &state,
            &mut rng,
            Instant::now(),
        );
        assert_eq!(d.forward().expect("forwarded").delay, None);
    }
}

#[test]
fn ratings_abort_answers_jason_with_500() {
    let table = bookinfo(&["virtual-service-ratings-test-abort.yaml"]);
    let (state, mut rng) = (LbState::new(), rng());
    let jason = headers(&[("end-user", "jason")]);
    let none = HeaderMap::new();
    for _ in 0..100 {
        let d = table.decide(
            &get("ratings", "/ratings/0", &jason),
            &state,
            &mut rng,
            Instant::now(),
        );
        let reply = d.reply().expect("answered by the fault");
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.flag, Some(ResponseFlag::FaultInjected));
        assert_eq!(reply.flag.map(|f| f.as_str()), Some("FI"));
        let d = table.decide(
            &get("ratings", "/ratings/0", &none),
            &state,
            &mut rng,
            Instant::now(),
        );
        assert!(d.forward().is_some());
    }
}

#[test]
fn details_abort_follows_its_percentage() {
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let count_aborts = |table: &RouteTable, rng: &mut fastrand::Rng, n: u32| {
        (0..n)
            .filter(|_| {
                match table.decide(
                    &get("details", "/details/0", &h),
                    &state,
                    rng,
                    Instant::now(),
                ) {
                    Decision::Respond(r) => {
                        assert_eq!(
                            (r.status.as_u16(), r.flag),
                            (555, Some(ResponseFlag::FaultInjected))
                        );
                        true
                    }
                    Decision::Forward(f) => {
                        assert_eq!(f.cluster.subset.as_deref(), Some("v1"));
                        false
                    }
                }
            })
            .count()
    };
    // As shipped: 100%.
    let table = bookinfo(&["fault-injection-details-v1.yaml"]);
    assert_eq!(count_aborts(&table, &mut rng, 1000), 1000);
    // The same file at 30%: 30% ± 3 over 10,000 requests.
    let text = std::fs::read_to_string(fixture("istio-bookinfo/fault-injection-details-v1.yaml"))
        .expect("fixture");
    assert!(text.contains("value: 100.0"));
    let table = bookinfo_with_yaml(&text.replace("value: 100.0", "value: 30.0"));
    let aborted = count_aborts(&table, &mut rng, 10_000);
    assert!(
        (2700..=3300).contains(&aborted),
        "{aborted} of 10000 aborted"
    );
}

const GATEWAY: Entry<'static> = Entry::Gateway("default/bookinfo-gateway");

#[test]
fn bookinfo_gateway_routes_its_prefixes_from_the_gateway_only() {
    let table = bookinfo(&["bookinfo-gateway.yaml"]);
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let at_gateway = |path: &'static str| {
        let mut r = get("bookinfo.example.com", path, &h);
        r.entry = GATEWAY;
        r.port = 80;
        r
    };
    for path in [
        "/productpage",
        "/static/css/x.css",
        "/login",
        "/logout",
        "/api/v1/products",
        "/api/v1/products/0/reviews",
        "/productpage?u=normal",
    ] {
        let d = table.decide(&at_gateway(path), &state, &mut rng, Instant::now());
        let f = d.forward().unwrap_or_else(|| panic!("{path}: {d:?}"));
        assert_eq!(f.cluster.host, "productpage.default.svc.cluster.local");
        assert_eq!(f.cluster.port, 9080);
        assert_eq!(f.route.virtual_service, Some("default/bookinfo"));
        assert_eq!(f.endpoint.endpoint.port, 9080);
    }
    for path in ["/", "/productpage/x", "/LOGIN", "/api/v2/products"] {
        let d = table.decide(&at_gateway(path), &state, &mut rng, Instant::now());
        let r = d.reply().unwrap_or_else(|| panic!("{path} routed"));
        assert_eq!(
            (r.status, r.flag),
            (StatusCode::NOT_FOUND, Some(ResponseFlag::NoRoute))
        );
    }
    // From the mesh the gateway's `*` VirtualService does not apply: an unknown host has no
    // route, and productpage gets its default route.
    let d = table.decide(
        &get("bookinfo.example.com", "/productpage", &h),
        &state,
        &mut rng,
        Instant::now(),
    );
    assert_eq!(d.reply().and_then(|r| r.flag), Some(ResponseFlag::NoRoute));
    let d = table.decide(
        &get("productpage", "/anything", &h),
        &state,
        &mut rng,
        Instant::now(),
    );
    let f = d.forward().expect("default route");
    assert_eq!(f.route.virtual_service, None);
    assert_eq!(f.cluster.subset, None);
    // Another gateway serves nothing of it.
    let mut other = at_gateway("/productpage");
    other.entry = Entry::Gateway("default/other-gateway");
    assert_eq!(table.route(&other).err(), Some(ResponseFlag::NoRoute));
}

#[test]
fn seed_ws_prefix_goes_to_car_and_the_rest_to_the_other_route() {
    let loaded = load_paths(&[fixture("seeds")]).unwrap_or_else(|e| panic!("{e}"));
    let table = table_of(Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}")));
    let (state, mut rng) = (LbState::new(), rng());
    let upgrade = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
    let at = |gateway: &'static str, path: &'static str| {
        let mut r = get("cars.example.com", path, &upgrade);
        r.entry = Entry::Gateway(gateway);
        r.port = 80;
        r
    };
    for path in ["/ws", "/ws/chat", "/wsx"] {
        let d = table.decide(
            &at("default/istio-gateway", path),
            &state,
            &mut rng,
            Instant::now(),
        );
        let f = d.forward().unwrap_or_else(|| panic!("{path}: {d:?}"));
        assert_eq!(
            (f.cluster.host.as_str(), f.cluster.port),
            ("car.default.svc.cluster.local", 8080)
        );
        assert_eq!(f.route.rule.index, 0);
        assert_eq!(f.endpoint.endpoint.port, 8080);
    }
    // Everything else takes the second rule, to `gateway`, which has no Service: 503 UH.
    let route = table
        .route(&at("default/istio-gateway", "/api"))
        .expect("route");
    assert_eq!(route.rule.index, 1);
    let d = table.decide(
        &at("default/istio-gateway", "/api"),
        &state,
        &mut rng,
        Instant::now(),
    );
    let r = d.reply().expect("no upstream");
    assert_eq!(
        (r.status, r.flag),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(ResponseFlag::NoHealthyUpstream)
        )
    );
    // The website gateway's own `*` VirtualService: everything to `website`.
    let route = table
        .route(&at("default/website-gateway", "/ws"))
        .expect("route");
    assert_eq!(
        route.virtual_service,
        Some("default/website-virtual-service")
    );
}
