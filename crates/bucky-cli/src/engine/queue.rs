//! A source node's jobs waiting to start, grouped by their destinations, so that a worker skips the jobs
//! of a destination that is paused (the go-carbon throttle) or waited for (flap damping, no answer yet) in
//! one step and takes the others' (one node must not stop the transfers to the rest). Within a group, jobs
//! go in the order planned.

use std::collections::VecDeque;

use super::job::Job;
use crate::config::Addr;

/// Jobs waiting to start, in groups of one destination set each.
#[derive(Debug, Default)]
pub(super) struct SourceQueue {
    groups: Vec<(Vec<Addr>, VecDeque<Job>)>,
    /// The group the next take starts with (the one the last take stopped in).
    current: usize,
    len: usize,
}

impl SourceQueue {
    /// Adds a job at the end of its group (groups in the order their first job came).
    pub(super) fn push(&mut self, job: Job) {
        self.len += 1;
        match self.groups.iter_mut().find(|(dests, _)| *dests == job.dests) {
            Some((_, jobs)) => jobs.push_back(job),
            None => self.groups.push((job.dests.clone(), VecDeque::from([job]))),
        }
    }

    /// Jobs waiting.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether none is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` jobs, each one `admit` lets go (asked with its destinations, once per job taken and
    /// once for a group it stops at). Groups take turns: a take goes on from the group the last one stopped
    /// in, so no destination set waits behind another's long run of jobs.
    pub(super) fn take(&mut self, max: usize, mut admit: impl FnMut(&[Addr]) -> bool) -> Vec<Job> {
        let mut out = Vec::new();
        let groups = self.groups.len();
        for step in 0..groups {
            let index = (self.current + step) % groups;
            let (dests, jobs) = &mut self.groups[index];
            while out.len() < max && !jobs.is_empty() && admit(dests) {
                out.extend(jobs.pop_front());
            }
            if out.len() >= max {
                // Full: the next take starts after this group if it was emptied, else with it.
                self.current = if jobs.is_empty() { (index + 1) % groups } else { index };
                break;
            }
        }
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, dests: &[&str]) -> Job {
        let addr = |a: &str| Addr::parse(a, 4242).unwrap();
        Job {
            name: name.into(),
            source_name: name.into(),
            source: addr("s"),
            dests: dests.iter().map(|d| addr(d)).collect(),
            keep_source: false,
        }
    }

    fn names(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.name.as_str()).collect()
    }

    #[test]
    fn one_destinations_jobs_go_in_the_planned_order() {
        let mut queue = SourceQueue::default();
        for name in ["a", "b", "c", "d"] {
            queue.push(job(name, &["x"]));
        }
        assert_eq!(names(&queue.take(3, |_| true)), ["a", "b", "c"]);
        assert_eq!(queue.len(), 1);
        assert_eq!(names(&queue.take(3, |_| true)), ["d"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_refused_destination_holds_only_its_own_jobs() {
        let mut queue = SourceQueue::default();
        for (name, dests) in [("a", &["x"][..]), ("b", &["y"]), ("c", &["x"]), ("d", &["x", "z"]), ("e", &["y"])] {
            queue.push(job(name, dests));
        }
        let paused = |dests: &[Addr]| !dests.iter().any(|d| d.host == "x");
        assert_eq!(names(&queue.take(10, paused)), ["b", "e"]);
        assert_eq!(queue.len(), 3);
        assert!(queue.take(10, paused).is_empty());
        // x resumes: its jobs go, in their order.
        assert_eq!(names(&queue.take(10, |_| true)), ["a", "c", "d"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn groups_take_turns_and_admission_is_asked_per_job() {
        let mut queue = SourceQueue::default();
        for i in 0..4 {
            queue.push(job(&format!("x{i}"), &["x"]));
            queue.push(job(&format!("y{i}"), &["y"]));
        }
        assert_eq!(names(&queue.take(3, |_| true)), ["x0", "x1", "x2"]);
        // The next take finishes x, then goes on with y.
        assert_eq!(names(&queue.take(3, |_| true)), ["x3", "y0", "y1"]);
        // A rate: x may take one more, y none.
        let mut tokens = 1;
        let mut queue2 = SourceQueue::default();
        for i in 0..3 {
            queue2.push(job(&format!("x{i}"), &["x"]));
        }
        let taken = queue2.take(10, |_| {
            tokens -= 1;
            tokens >= 0
        });
        assert_eq!(names(&taken), ["x0"]);
        assert_eq!(queue.len(), 2);
    }
}
