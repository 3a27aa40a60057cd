//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.
//!
//! * A candidate takes the Lease when it does not exist, is released (no
//!   holder) or has not changed for a whole lease duration *as observed by
//!   the candidate's own clock* (so clock skew between replicas does not
//!   matter), and writes it with the `resourceVersion` it read, so that of two
//!   racing candidates exactly one wins (the other gets 409 Conflict).
//! * The leader renews every [`LeaseTiming::renew`]; when it has not renewed
//!   successfully for [`LeaseTiming::renew_deadline`] (shorter than the lease
//!   duration) it steps down before anybody else can take over.
//! * A leader that shuts down releases the Lease so a standby takes over at
//!   once instead of after the lease duration.
//!
//! The outcome is a `watch<bool>`: `true` while this replica leads.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use tokio::sync::watch;

/// Lease timings (client-go's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease is valid after its last renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a candidate (or a leader whose renewal failed) retries.
    pub retry: Duration,
}

impl Default for LeaseTiming {
    /// 15 s lease, renewed every 5 s, retried every 2 s; a leader that could
    /// not renew for 10 s steps down, 5 s before others may take over.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// The last Lease record seen held by someone else, and when.
#[derive(Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    at: Instant,
}

/// One replica's candidacy for the Lease `name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        Self { api, name: name.to_string(), identity: identity.to_string(), timing, observed: None }
    }

    /// Campaigns, leads and renews until `shutdown` turns true, publishing
    /// leadership on `leading`; releases the Lease on the way out.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let is_leader = *leading.borrow();
            let outcome = self.try_acquire_or_renew().await;
            let renewed = matches!(outcome, Ok(true));
            match outcome {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    if !is_leader {
                        tracing::info!(lease = %self.name, identity = %self.identity, "acquired the lease; leading");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if is_leader {
                        tracing::warn!(lease = %self.name, "the lease was taken over; stepping down");
                        leading.send_replace(false);
                    }
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "reading or writing the lease failed");
                    let expired = last_renewal.is_none_or(|at| at.elapsed() >= self.timing.renew_deadline);
                    if is_leader && expired {
                        tracing::warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                        leading.send_replace(false);
                    }
                }
            }
            let wait = if *leading.borrow() && renewed { self.timing.renew } else { self.timing.retry };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            self.release().await;
        }
    }

    /// One round: takes or renews the Lease if allowed. `Ok(true)` when this
    /// replica holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
        if holder.as_deref() != Some(self.identity.as_str()) && holder.is_some() && !self.expired(&lease) {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&spec), now));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether the Lease, held by another, has not changed for a lease
    /// duration since this replica first saw it in its current state.
    fn expired(&mut self, lease: &Lease) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(self.timing.duration, Duration::from_secs);
        let same = self.observed.as_ref().is_some_and(|observed| {
            observed.holder == spec.holder_identity
                && observed.renew_time == spec.renew_time
                && observed.resource_version == lease.metadata.resource_version
        });
        if !same {
            self.observed = Some(Observed {
                holder: spec.holder_identity,
                renew_time: spec.renew_time,
                resource_version: lease.metadata.resource_version.clone(),
                at: Instant::now(),
            });
            return false;
        }
        self.observed.as_ref().is_some_and(|observed| observed.at.elapsed() >= duration)
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: MicroTime) -> LeaseSpec {
        next_spec(&self.identity, self.timing.duration, previous, now)
    }

    /// Gives the Lease up (no holder, 1 s duration) if this replica holds it.
    async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = %self.name, "released the lease"),
            Err(error) => tracing::warn!(lease = %self.name, %error, "could not release the lease"),
        }
    }
}

/// The spec `identity` writes: renewed now; acquired now, with one more
/// transition, when it was not the holder before.
fn next_spec(identity: &str, duration: Duration, previous: Option<&LeaseSpec>, now: MicroTime) -> LeaseSpec {
    let held = previous.is_some_and(|spec| spec.holder_identity.as_deref() == Some(identity));
    let transitions = previous.and_then(|spec| spec.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if held { previous.and_then(|spec| spec.acquire_time.clone()) } else { Some(now.clone()) },
        renew_time: Some(now),
        lease_transitions: Some(if held || previous.is_none() { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn a_new_lease_starts_with_no_transitions() {
        let spec = next_spec("a_1", Duration::from_secs(15), None, at(100));
        assert_eq!(spec.holder_identity.as_deref(), Some("a_1"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!((spec.acquire_time, spec.renew_time.clone()), (Some(at(100)), Some(at(100))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_taking_over_counts() {
        let first = next_spec("a_1", Duration::from_secs(15), None, at(100));
        let renewed = next_spec("a_1", Duration::from_secs(15), Some(&first), at(105));
        assert_eq!(renewed.acquire_time, Some(at(100)));
        assert_eq!(renewed.renew_time, Some(at(105)));
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = next_spec("b_2", Duration::from_secs(15), Some(&renewed), at(130));
        assert_eq!(taken.holder_identity.as_deref(), Some("b_2"));
        assert_eq!(taken.acquire_time, Some(at(130)));
        assert_eq!(taken.lease_transitions, Some(1));
        let released = LeaseSpec { holder_identity: None, ..taken };
        assert_eq!(next_spec("a_1", Duration::from_secs(15), Some(&released), at(131)).lease_transitions, Some(2));
    }

    #[test]
    fn the_default_timing_steps_down_before_others_may_take_over() {
        let timing = LeaseTiming::default();
        assert_eq!(timing.duration, Duration::from_secs(15));
        assert_eq!(timing.renew, Duration::from_secs(5));
        assert_eq!(timing.retry, Duration::from_secs(2));
        assert!(timing.renew_deadline < timing.duration);
        assert!(timing.renew < timing.renew_deadline);
    }
}
