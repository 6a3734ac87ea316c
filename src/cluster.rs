//! Fluvio cluster setup for local and compose deployments (`verdict fluvio-setup`):
//! registers a custom SPU with the SC and creates topics, each step skipped when it is
//! already done, so the command can run on every start.

use fluvio::metadata::customspu::CustomSpuSpec;
use fluvio::metadata::topic::TopicSpec;
use fluvio_controlplane_metadata::spu::{EncryptionEnum, Endpoint, IngressAddr, IngressPort};

/// A `host:port` pair from the command line.
fn host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("{s:?} is not host:port"))?;
    let port = p.parse().map_err(|_| anyhow::anyhow!("{s:?}: {p:?} is not a port"))?;
    Ok((h.to_string(), port))
}

/// A custom SPU to register.
#[derive(Clone, Debug)]
pub struct SpuRegistration {
    pub id: i32,
    /// Where clients reach it (`host:port`).
    pub public: String,
    /// Where the SC reaches it (`host:port`).
    pub private: String,
}

/// Registers `spu` (unless an SPU with its id exists) and creates each `(topic,
/// partitions)` that does not exist yet. Returns what it did, for the log.
pub async fn setup(
    endpoint: &str,
    spu: Option<SpuRegistration>,
    topics: &[(String, u32)],
) -> anyhow::Result<Vec<String>> {
    let fluvio = crate::sources::fluvio::connect(endpoint).await?;
    let admin = fluvio.admin().await;
    let mut done = Vec::new();
    if let Some(spu) = spu {
        let existing = admin.all::<CustomSpuSpec>().await?;
        if existing.iter().any(|s| s.spec.id == spu.id) {
            done.push(format!("SPU {} already registered", spu.id));
        } else {
            let (ph, pp) = host_port(&spu.public)?;
            let (vh, vp) = host_port(&spu.private)?;
            let spec = CustomSpuSpec {
                id: spu.id,
                public_endpoint: IngressPort {
                    port: pp,
                    ingress: vec![IngressAddr::from_host(ph.clone())],
                    encryption: EncryptionEnum::PLAINTEXT,
                },
                public_endpoint_local: Some(Endpoint { port: pp, host: ph, encryption: EncryptionEnum::PLAINTEXT }),
                private_endpoint: Endpoint { port: vp, host: vh, encryption: EncryptionEnum::PLAINTEXT },
                rack: None,
            };
            admin.create(format!("custom-spu-{}", spu.id), false, spec).await?;
            done.push(format!("registered SPU {} at {}", spu.id, spu.public));
        }
    }
    for (topic, partitions) in topics {
        let found = admin.list::<TopicSpec, String>(vec![topic.clone()]).await?;
        if found.iter().any(|t| &t.name == topic) {
            done.push(format!("topic {topic} exists"));
            continue;
        }
        admin.create(topic.clone(), false, TopicSpec::new_computed(*partitions, 1, None)).await?;
        done.push(format!("created topic {topic} with {partitions} partition(s)"));
    }
    Ok(done)
}

/// Parses `NAME:PARTITIONS` (or `NAME`, one partition).
pub fn parse_topic(s: &str) -> anyhow::Result<(String, u32)> {
    match s.rsplit_once(':') {
        Some((name, n)) if !name.is_empty() => {
            let n: u32 = n.parse().map_err(|_| anyhow::anyhow!("topic {s:?}: {n:?} is not a partition count"))?;
            anyhow::ensure!(n > 0, "topic {s:?}: needs at least one partition");
            Ok((name.to_string(), n))
        }
        Some(_) => anyhow::bail!("topic {s:?} has no name"),
        None if !s.is_empty() => Ok((s.to_string(), 1)),
        None => anyhow::bail!("empty topic name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_addresses_parse() {
        assert_eq!(parse_topic("events:4").unwrap(), ("events".to_string(), 4));
        assert_eq!(parse_topic("verdicts").unwrap(), ("verdicts".to_string(), 1));
        for bad in ["", ":3", "e:0", "e:x"] {
            assert!(parse_topic(bad).is_err(), "{bad}");
        }
        assert_eq!(host_port("spu:9010").unwrap(), ("spu".to_string(), 9010));
        assert!(host_port("spu").is_err());
        assert!(host_port("spu:99999").is_err());
    }
}
