//! `triton-repo --out DIR [--watch]`: the Triton model repository for the service's `triton`
//! endpoints, for teams that keep a Triton server (see `serval_server::triton_repo`).

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::cli::{GlobalArgs, TritonRepoArgs};
use crate::context::{Context, home_dir, note, warn};

pub fn triton_repo(ctx: &Context, global: &GlobalArgs, args: &TritonRepoArgs) -> Result<()> {
    let service = ctx.service()?;
    let cache = home_dir(global)?.join("cache");
    let interval = Duration::from_millis(args.interval_ms.max(50));
    let mut written_at = None;
    loop {
        let snapshot = ctx.deployment().snapshot(&service.id)?;
        if written_at != Some(snapshot.service.revision) {
            let report = serval_server::triton_repo::write_repository(
                &*ctx.local("triton-repo")?.store,
                &snapshot.config,
                &args.out,
                &cache,
            )
            .map_err(|e| anyhow!(e))?;
            for name in &report.written {
                note(format!("Wrote {}", args.out.join(name).display()));
            }
            for name in &report.removed {
                note(format!("Removed {}", args.out.join(name).display()));
            }
            for (name, why) in &report.skipped {
                warn(format!("Skipped {name}: {why}"));
            }
            if !args.watch {
                if !report.skipped.is_empty() {
                    bail!(
                        "{} triton endpoint(s) could not be written (see above)",
                        report.skipped.len()
                    );
                }
                return Ok(());
            }
            written_at = Some(snapshot.service.revision);
        }
        std::thread::sleep(interval);
    }
}
