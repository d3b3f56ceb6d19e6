//! The tasks of one deployment experiment and what each is for.

use crate::mdp::Deployment;

/// What a task of a [`Workload`] is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Users ask it every generation: sampled, validated, curated, trained on.
    Deployed,
    /// Never sampled or trained on; only evaluated (generalisation).
    HeldOut,
    /// Generation 0's training demonstrations come from it (planner plans);
    /// it is not deployed or evaluated.
    Base,
}

/// A deployment with per-task roles, size buckets and optimal plan lengths.
pub struct Workload {
    /// μ is uniform over the deployed tasks and zero elsewhere, so J and ∇J
    /// are the deployment objective.
    pub env: Deployment,
    pub role: Vec<Role>,
    /// Index into `buckets` for each task.
    pub bucket: Vec<usize>,
    pub buckets: Vec<String>,
    /// Length of a shortest plan within the horizon (breadth-first over the
    /// reachable state graph, i.e. the optimal length), None if the goal is
    /// not reachable within the horizon.
    pub optimal: Vec<Option<usize>>,
}

impl Workload {
    pub fn new(
        mut env: Deployment,
        role: Vec<Role>,
        bucket: Vec<usize>,
        buckets: Vec<String>,
    ) -> crate::Result<Self> {
        assert_eq!(role.len(), env.tasks.len(), "one role per task");
        assert_eq!(bucket.len(), env.tasks.len(), "one bucket per task");
        let deployed = role.iter().filter(|&&r| r == Role::Deployed).count();
        if deployed == 0 {
            return Err(crate::Error::Invalid(
                "the workload deploys no task (all held out or base)".into(),
            ));
        }
        env.mu = role
            .iter()
            .map(|&r| {
                if r == Role::Deployed {
                    1.0 / deployed as f64
                } else {
                    0.0
                }
            })
            .collect();
        let optimal = env
            .tasks
            .iter()
            .map(|t| {
                (0..t.num_states())
                    .filter(|&s| t.is_goal[s])
                    .map(|s| t.depth[s] as usize)
                    .min()
            })
            .collect();
        Ok(Workload {
            env,
            role,
            bucket,
            buckets,
            optimal,
        })
    }

    /// The workload without its base tasks (which must come last): the
    /// deployment loop never touches them, so exact metrics skip them.
    pub fn without_base(&self) -> crate::Result<Workload> {
        let n = self.role.iter().take_while(|&&r| r != Role::Base).count();
        if self.role[n..].iter().any(|&r| r != Role::Base) {
            return Err(crate::Error::Invalid(
                "base tasks must come after the deployed and held-out tasks".into(),
            ));
        }
        Workload::new(
            self.env.prefix(n),
            self.role[..n].to_vec(),
            self.bucket[..n].to_vec(),
            self.buckets.clone(),
        )
    }

    /// Indices of the tasks with `role`, in task order.
    pub fn tasks_with(&self, role: Role) -> Vec<usize> {
        (0..self.role.len())
            .filter(|&x| self.role[x] == role)
            .collect()
    }
}
