use super::*;

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

const PURE_V2: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

#[test]
fn finds_hybrid_unified_mount() {
    assert_eq!(
        parse_cgroup2_mount(HYBRID),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
}

#[test]
fn finds_pure_v2_mount() {
    assert_eq!(
        parse_cgroup2_mount(PURE_V2),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn no_cgroup2_mount() {
    assert_eq!(
        parse_cgroup2_mount("32 31 0:29 / /a rw - cgroup cgroup rw,cpu\n"),
        None
    );
}

#[test]
fn unescapes_spaces_in_mount_point() {
    let line = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
    assert_eq!(parse_cgroup2_mount(line), Some(PathBuf::from("/mnt/my cg")));
}
