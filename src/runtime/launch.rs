//! What a replica runs, decided once for every runtime that runs replicas (docker, swarm,
//! process): the entrypoint, the command and the environment, with the manifest's templates
//! (`{name}`, `{id}`, `{port}`) filled in.
//!
//! The rule: `replica.command` and `replica.entrypoint` replace the image's own; when neither is
//! given, an image of ringlb itself runs `server --port <port>` with `SERVER_ID=<name>` (as every
//! manifest did before these keys existed), and any other image runs its own command. The
//! variables of `replica.env` come after `SERVER_ID`, so a manifest may override it.

use crate::manifest::template::{self, Values};
use crate::manifest::{ReplicaSpec, Resources};

/// The program a replica runs, as the runtime hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Replaces the image's entrypoint (a process: the first words of the command line).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command (a process: the rest of the command line).
    pub command: Option<Vec<String>>,
    /// Each variable's name and value, in this order.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// What `spec` runs for the replica `values` describes.
    pub fn of(spec: &ReplicaSpec, values: Values<'_>) -> Launch {
        let expand = |list: &Option<Vec<String>>| {
            list.as_ref().map(|parts| parts.iter().map(|p| template::expand(p, values)).collect())
        };
        let mut env = Vec::with_capacity(spec.env.len() + 1);
        let (entrypoint, command) = if spec.runs_ringlb_server() {
            if !spec.env.contains_key("SERVER_ID") {
                env.push(("SERVER_ID".to_owned(), values.name.to_owned()));
            }
            (None, Some(vec!["server".to_owned(), "--port".to_owned(), values.port.to_string()]))
        } else {
            (expand(&spec.entrypoint), expand(&spec.command))
        };
        env.extend(spec.env.iter().map(|(name, value)| (name.clone(), template::expand(value, values))));
        Launch { entrypoint, command, env }
    }

    /// The environment as a container engine takes it: `NAME=value` each, `None` when empty.
    pub fn env_assignments(&self) -> Option<Vec<String>> {
        let assignments: Vec<String> =
            self.env.iter().map(|(name, value)| format!("{name}={value}")).collect();
        Some(assignments).filter(|a| !a.is_empty())
    }

    /// The value variable `name` gets, if any.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The whole command line of a process: the entrypoint, then the command.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.command).flatten().cloned().collect()
    }
}

/// The part of a spec hash that says what a replica runs: empty when the spec uses none of the
/// launch keys (so that the hashes of existing manifests stay what they were and nothing rolls
/// on upgrade), else one line per key that is set, in a fixed order.
pub fn hash_text(spec: &ReplicaSpec) -> String {
    let mut text = String::new();
    let mut line = |key: &str, value: String| {
        text.push('\n');
        text.push_str(key);
        text.push(' ');
        text.push_str(&value);
    };
    if let Some(command) = &spec.command {
        line("command", format!("{command:?}"));
    }
    if let Some(entrypoint) = &spec.entrypoint {
        line("entrypoint", format!("{entrypoint:?}"));
    }
    if !spec.env.is_empty() {
        line("env", format!("{:?}", spec.env));
    }
    let Resources { cpus, memory } = spec.resources;
    if let Some(cpus) = cpus {
        line("cpus", cpus.to_string());
    }
    if let Some(memory) = memory {
        line("memory", memory.0.to_string());
    }
    if !spec.labels.is_empty() {
        line("labels", format!("{:?}", spec.labels));
    }
    if let Some(signal) = &spec.stop_signal {
        line("stop_signal", signal.clone());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    const V: Values<'static> = Values { name: "web-2", id: 2, port: 8080 };

    fn spec(yaml: &str) -> ReplicaSpec {
        Manifest::parse(&format!("name: d\nreplica:\n{yaml}")).unwrap().replica
    }

    #[test]
    fn ringlbs_image_runs_its_server_as_before() {
        let launch = Launch::of(&ReplicaSpec::default(), V);
        assert_eq!(launch.entrypoint, None);
        assert_eq!(launch.command, Some(vec!["server".into(), "--port".into(), "8080".into()]));
        assert_eq!(launch.env_assignments(), Some(vec!["SERVER_ID=web-2".to_owned()]));
        let extra = Launch::of(&spec("  env: {SERVER_ID: 'x-{id}', MODE: fast}\n"), V);
        assert_eq!(
            extra.env_assignments(),
            Some(vec!["MODE=fast".to_owned(), "SERVER_ID=x-2".to_owned()]),
            "the manifest's value wins"
        );
        assert_eq!(extra.var("SERVER_ID"), Some("x-2"));
    }

    #[test]
    fn another_image_runs_its_own_command_or_the_manifests() {
        let own = Launch::of(&spec("  image: nginx:1\n"), V);
        assert_eq!((&own.entrypoint, &own.command, own.env_assignments()), (&None, &None, None));
        let given = Launch::of(
            &spec(
                "  image: busybox:1\n  command: [/bin/busybox, httpd, -f, -p, '{port}']\n  env: {WHO: '{name}'}\n",
            ),
            V,
        );
        assert_eq!(given.command.as_deref().map(<[String]>::len), Some(5));
        assert_eq!(given.argv().join(" "), "/bin/busybox httpd -f -p 8080");
        assert_eq!(given.env_assignments(), Some(vec!["WHO=web-2".to_owned()]));
        let with_entry = Launch::of(&spec("  entrypoint: [/bin/sh, -c]\n  command: ['echo {id}']\n"), V);
        assert_eq!(
            with_entry.argv(),
            ["/bin/sh", "-c", "echo 2"],
            "entrypoint first, even of ringlb's image"
        );
    }

    #[test]
    fn only_the_launch_keys_that_are_set_reach_the_hash() {
        assert_eq!(hash_text(&ReplicaSpec::default()), "");
        let a = hash_text(&spec("  env: {A: '1'}\n"));
        let b = hash_text(&spec("  env: {A: '2'}\n"));
        assert_ne!(a, b);
        assert_ne!(
            hash_text(&spec("  resources: {memory: 64Mi}\n")),
            hash_text(&spec("  resources: {memory: 65Mi}\n"))
        );
        assert!(hash_text(&spec("  stop_signal: SIGQUIT\n")).ends_with("stop_signal SIGQUIT"));
    }
}
