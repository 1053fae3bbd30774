//! Enrollment decides, then acts. What the kernel must do for a new pod is a plain list of
//! steps ([`plan`]: steer each address to the agent's inbound listener, enroll the pod's
//! network namespace with the node-level cgroup programs, then attach `sk_lookup` to that
//! namespace unless an earlier run left it attached); [`apply`] carries them out
//! in order and, when one fails, undoes the ones already done, newest first, so a failed
//! enrollment leaves the kernel as it found it. Both are unit-tested here without a
//! kernel; the agent applies them to the real `Redirector`.
use std::net::IpAddr;

/// One kernel change of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// SYNs to `ip` go to the agent's inbound listener of its family.
    Steer(IpAddr),
    /// The pod's network namespace is enrolled: the cgroup programs, attached once per
    /// node, act on its sockets.
    Capture,
    /// `sk_lookup` is attached to the pod's network namespace.
    Attach,
}

/// What the kernel can be asked to do, and to undo.
pub trait Kernel {
    type Error;
    fn steer(&mut self, ip: IpAddr) -> Result<(), Self::Error>;
    fn unsteer(&mut self, ip: IpAddr);
    fn capture(&mut self) -> Result<(), Self::Error>;
    fn uncapture(&mut self);
    fn attach(&mut self) -> Result<(), Self::Error>;
    fn detach(&mut self);
}

/// The steps for a pod with addresses `ips`: addresses first (a SYN steered before the
/// programs are attached simply finds the listener), then the namespace, attachment last.
/// IPv6 addresses are skipped when the pod has no IPv6 inbound listener (no `::1`: such a
/// pod gets no native IPv6 inbound), and attachment when it survived from an earlier run.
/// The namespace is always (re-)enrolled: idempotent, and a map of an older build may
/// lack it.
pub fn plan(ips: &[IpAddr], ipv6_listener: bool, already_attached: bool) -> Vec<Step> {
    let mut steps: Vec<Step> = ips
        .iter()
        .filter(|ip| ip.is_ipv4() || ipv6_listener)
        .map(|ip| Step::Steer(*ip))
        .collect();
    steps.push(Step::Capture);
    if !already_attached {
        steps.push(Step::Attach);
    }
    steps
}

/// Carries `steps` out in order; on the first failure undoes the steps done so far, newest
/// first, and returns that failure.
pub fn apply<K: Kernel>(kernel: &mut K, steps: &[Step]) -> Result<(), K::Error> {
    for (done, step) in steps.iter().enumerate() {
        let result = match step {
            Step::Steer(ip) => kernel.steer(*ip),
            Step::Capture => kernel.capture(),
            Step::Attach => kernel.attach(),
        };
        if let Err(e) = result {
            for step in steps[..done].iter().rev() {
                match step {
                    Step::Steer(ip) => kernel.unsteer(*ip),
                    Step::Capture => kernel.uncapture(),
                    Step::Attach => kernel.detach(),
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call; fails the `fail_at`-th change (0-based).
    struct Recorder {
        calls: Vec<String>,
        changes: usize,
        fail_at: Option<usize>,
    }

    impl Recorder {
        fn failing_at(fail_at: Option<usize>) -> Self {
            Recorder {
                calls: Vec::new(),
                changes: 0,
                fail_at,
            }
        }

        fn change(&mut self, call: String) -> Result<(), String> {
            let n = self.changes;
            self.changes += 1;
            if self.fail_at == Some(n) {
                return Err(format!("{call} failed"));
            }
            self.calls.push(call);
            Ok(())
        }
    }

    impl Kernel for Recorder {
        type Error = String;
        fn steer(&mut self, ip: IpAddr) -> Result<(), String> {
            self.change(format!("steer {ip}"))
        }
        fn unsteer(&mut self, ip: IpAddr) {
            self.calls.push(format!("unsteer {ip}"));
        }
        fn capture(&mut self) -> Result<(), String> {
            self.change("capture".into())
        }
        fn uncapture(&mut self) {
            self.calls.push("uncapture".into());
        }
        fn attach(&mut self) -> Result<(), String> {
            self.change("attach".into())
        }
        fn detach(&mut self) {
            self.calls.push("detach".into());
        }
    }

    fn ips() -> Vec<IpAddr> {
        vec!["198.18.1.11".parse().unwrap(), "fd00::11".parse().unwrap()]
    }

    #[test]
    fn addresses_first_then_programs_and_only_what_is_missing() {
        let v4: IpAddr = "198.18.1.11".parse().unwrap();
        let v6: IpAddr = "fd00::11".parse().unwrap();
        assert_eq!(
            plan(&ips(), true, false),
            [
                Step::Steer(v4),
                Step::Steer(v6),
                Step::Capture,
                Step::Attach
            ]
        );
        // No IPv6 listener: the IPv6 address is not steered to nothing.
        assert_eq!(
            plan(&ips(), false, false),
            [Step::Steer(v4), Step::Capture, Step::Attach]
        );
        // Restart: the pinned link is still attached; the namespace is enrolled again.
        assert_eq!(
            plan(&ips(), true, true),
            [Step::Steer(v4), Step::Steer(v6), Step::Capture]
        );
    }

    #[test]
    fn all_steps_done_when_nothing_fails() {
        let mut kernel = Recorder::failing_at(None);
        apply(&mut kernel, &plan(&ips(), true, false)).unwrap();
        assert_eq!(
            kernel.calls,
            ["steer 198.18.1.11", "steer fd00::11", "capture", "attach"]
        );
    }

    #[test]
    fn a_failure_undoes_what_was_done_newest_first() {
        let steps = plan(&ips(), true, false);
        let expected: [&[&str]; 4] = [
            // The first step fails: nothing to undo.
            &[],
            &["steer 198.18.1.11", "unsteer 198.18.1.11"],
            &[
                "steer 198.18.1.11",
                "steer fd00::11",
                "unsteer fd00::11",
                "unsteer 198.18.1.11",
            ],
            &[
                "steer 198.18.1.11",
                "steer fd00::11",
                "capture",
                "uncapture",
                "unsteer fd00::11",
                "unsteer 198.18.1.11",
            ],
        ];
        for (fail_at, calls) in expected.iter().enumerate() {
            let mut kernel = Recorder::failing_at(Some(fail_at));
            let error = apply(&mut kernel, &steps).unwrap_err();
            assert!(error.ends_with("failed"), "{error}");
            assert_eq!(&kernel.calls, calls, "failing at step {fail_at}");
        }
    }

    #[test]
    fn an_attachment_done_before_a_failure_is_detached() {
        let v4: IpAddr = "198.18.1.11".parse().unwrap();
        let mut kernel = Recorder::failing_at(Some(1));
        let error = apply(&mut kernel, &[Step::Attach, Step::Steer(v4)]).unwrap_err();
        assert_eq!(error, "steer 198.18.1.11 failed");
        assert_eq!(kernel.calls, ["attach", "detach"]);
    }
}
