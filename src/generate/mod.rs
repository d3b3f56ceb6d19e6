//! Seeded task generators for the paper's domains. The same domain,
//! parameters and seed give byte-identical problem files: task `i` of a
//! batch draws from its own stream `rng::stream(seed, i)`.

mod blocksworld;
pub mod ferry;
mod rovers;
mod sokoban;

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Error, Result};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DomainKind {
    Blocksworld,
    Ferry,
    Rovers,
    Sokoban,
}

impl DomainKind {
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::Blocksworld => "blocksworld",
            DomainKind::Ferry => "ferry",
            DomainKind::Rovers => "rovers",
            DomainKind::Sokoban => "sokoban",
        }
    }

    /// The domain file shipped with iterdeploy (IPC 2023 learning-track encoding).
    pub fn domain_pddl(self) -> &'static str {
        match self {
            DomainKind::Blocksworld => include_str!("../domains/blocksworld.pddl"),
            DomainKind::Ferry => include_str!("../domains/ferry.pddl"),
            DomainKind::Rovers => include_str!("../domains/rovers.pddl"),
            DomainKind::Sokoban => include_str!("../domains/sokoban.pddl"),
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "blocksworld" => Ok(DomainKind::Blocksworld),
            "ferry" => Ok(DomainKind::Ferry),
            "rovers" | "rover" => Ok(DomainKind::Rovers),
            "sokoban" => Ok(DomainKind::Sokoban),
            other => Err(Error::Invalid(format!(
                "unknown domain `{other}` (generators exist for: blocksworld, ferry, rovers, sokoban)"
            ))),
        }
    }

    pub fn parse_domain(self) -> crate::pddl::Domain {
        crate::pddl::parse_domain(self.domain_pddl().as_bytes(), self.name())
            .expect("the shipped domains parse (checked by tests)")
    }
}

/// `key=value` parameters, checked and consumed by a generator; keys left
/// over are an error naming them.
pub struct Params {
    map: BTreeMap<String, String>,
    used: Vec<String>,
    domain: &'static str,
}

impl Params {
    pub fn new(domain: DomainKind, map: BTreeMap<String, String>) -> Self {
        Params {
            map,
            used: Vec::new(),
            domain: domain.name(),
        }
    }

    /// Parses `k=v` strings.
    pub fn from_pairs(domain: DomainKind, pairs: &[String]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for p in pairs {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Error::Invalid(format!("parameter `{p}` is not of the form key=value"))
            })?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Params::new(domain, map))
    }

    /// An integer parameter in `[min, max]`.
    pub fn int(&mut self, key: &str, default: usize, min: usize, max: usize) -> Result<usize> {
        self.used.push(key.to_string());
        let Some(raw) = self.map.get(key) else {
            return Ok(default);
        };
        match raw.parse::<usize>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(Error::Invalid(format!(
                "{}: parameter `{key}` must be an integer in {min}..={max}, got `{raw}`",
                self.domain
            ))),
        }
    }

    /// Fails on keys no generator read.
    pub fn finish(&self) -> Result<()> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(k))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{}: unknown parameter(s) {} (known: {})",
                self.domain,
                unknown.join(", "),
                self.used.join(", ")
            )))
        }
    }
}

/// One generated problem.
#[derive(Clone, Debug)]
pub struct GeneratedTask {
    pub name: String,
    pub pddl: String,
    /// Resolved parameters, `k=v;k=v` with defaults filled in.
    pub params: String,
}

/// A domain's generator with its checked parameters.
trait Generator {
    /// Problem text for one task named `name`.
    fn generate(&self, name: &str, rng: &mut crate::rng::Rng) -> Result<String>;
    /// The resolved parameters, `k=v;k=v`.
    fn describe(&self) -> String;
}

impl Generator for blocksworld::BlocksworldParams {
    fn generate(&self, name: &str, rng: &mut crate::rng::Rng) -> Result<String> {
        Ok(blocksworld::BlocksworldParams::generate(self, name, rng))
    }
    fn describe(&self) -> String {
        blocksworld::BlocksworldParams::describe(self)
    }
}

impl Generator for ferry::FerryParams {
    fn generate(&self, name: &str, rng: &mut crate::rng::Rng) -> Result<String> {
        Ok(ferry::FerryParams::generate(self, name, rng))
    }
    fn describe(&self) -> String {
        ferry::FerryParams::describe(self)
    }
}

impl Generator for sokoban::SokobanParams {
    fn generate(&self, name: &str, rng: &mut crate::rng::Rng) -> Result<String> {
        sokoban::SokobanParams::generate(self, name, rng)
    }
    fn describe(&self) -> String {
        sokoban::SokobanParams::describe(self)
    }
}

impl Generator for rovers::RoversParams {
    fn generate(&self, name: &str, rng: &mut crate::rng::Rng) -> Result<String> {
        Ok(rovers::RoversParams::generate(self, name, rng))
    }
    fn describe(&self) -> String {
        rovers::RoversParams::describe(self)
    }
}

/// Generates `count` problems; task `i` uses stream `(seed, i)`.
pub fn generate(
    kind: DomainKind,
    params: &mut Params,
    count: usize,
    seed: u64,
) -> Result<Vec<GeneratedTask>> {
    let generator: Box<dyn Generator> = match kind {
        DomainKind::Blocksworld => Box::new(blocksworld::BlocksworldParams::read(params)?),
        DomainKind::Ferry => Box::new(ferry::FerryParams::read(params)?),
        DomainKind::Sokoban => Box::new(sokoban::SokobanParams::read(params)?),
        DomainKind::Rovers => Box::new(rovers::RoversParams::read(params)?),
    };
    params.finish()?;
    // The name says the size first, then the seed and index:
    // `blocksworld-b5-seed3-0000` is task 0 of seed 3 with 5 blocks.
    let size: String = generator
        .describe()
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("{}{v}", &k[..k.len().min(1)]))
        .collect();
    (0..count)
        .map(|i| {
            let name = format!("{}-{size}-seed{seed}-{i:04}", kind.name());
            let pddl = generator.generate(&name, &mut crate::rng::stream(seed, i as u64))?;
            Ok(GeneratedTask {
                name,
                pddl,
                params: generator.describe(),
            })
        })
        .collect()
}

/// `manifest.csv` of a generated batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    pub rows: Vec<ManifestRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRow {
    /// Problem file, relative to the manifest.
    pub file: String,
    pub domain: String,
    pub seed: u64,
    pub index: usize,
    pub params: String,
    /// Length of the plan found, if planned.
    pub plan_length: Option<usize>,
    /// Whether that length is proven optimal (A* with an admissible heuristic).
    pub plan_optimal: bool,
}

const MANIFEST_HEADER: &str = "file,domain,seed,index,params,plan_length,plan_optimal";

impl Manifest {
    pub fn to_csv(&self) -> String {
        let mut s = format!("{MANIFEST_HEADER}\n");
        for r in &self.rows {
            s += &format!(
                "{},{},{},{},{},{},{}\n",
                r.file,
                r.domain,
                r.seed,
                r.index,
                r.params,
                r.plan_length.map_or(String::new(), |l| l.to_string()),
                r.plan_optimal
            );
        }
        s
    }

    pub fn read(path: &Path) -> Result<Manifest> {
        let text = crate::input::read_text(path)?;
        let bad =
            |line: usize, what: &str| Error::Invalid(format!("{}:{line}: {what}", path.display()));
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.trim() == MANIFEST_HEADER => {}
            _ => return Err(bad(1, &format!("expected the header `{MANIFEST_HEADER}`"))),
        }
        let mut rows = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 7 {
                return Err(bad(i + 1, &format!("expected 7 fields, found {}", f.len())));
            }
            let num = |s: &str, what: &str| {
                s.parse::<u64>()
                    .map_err(|_| bad(i + 1, &format!("{what} `{s}` is not a number")))
            };
            rows.push(ManifestRow {
                file: f[0].to_string(),
                domain: f[1].to_string(),
                seed: num(f[2], "seed")?,
                index: num(f[3], "index")? as usize,
                params: f[4].to_string(),
                plan_length: if f[5].is_empty() {
                    None
                } else {
                    Some(num(f[5], "plan_length")? as usize)
                },
                plan_optimal: f[6] == "true",
            });
        }
        Ok(Manifest { rows })
    }
}
