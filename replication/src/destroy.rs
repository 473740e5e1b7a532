//! Destroying a nexus in an orderly way: stop the rebuilds and the write-intent task, let
//! host writes in flight settle, flush every child, and mark the metadata clean at a new
//! generation, so that the next start needs no resynchronisation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::commit::{Ctx, label_for, next_generation};
use crate::label::Label;
use crate::rebuild::ctl::RebuildCtl;
use crate::routing::ChildShared;
use crate::state::ChildState;
use crate::{NexusError, exec, persist};

/// How long `destroy` waits for rebuild tasks to notice they must stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Destroys the nexus (the control task's `Op::Destroy`).
pub(crate) async fn destroy(ctx: &Ctx) -> Result<(), NexusError> {
    let nx = &ctx.nx;
    let ctls: Vec<Arc<RebuildCtl>> = {
        let mut st = nx.lock_state();
        st.destroying = true;
        nx.intent.wake.notify();
        st.children
            .iter()
            .filter_map(|c| c.rebuild.clone())
            .collect()
    };
    nx.info.close();
    for c in &ctls {
        c.stop.store(true, Ordering::Release);
    }
    let deadline = std::time::Instant::now() + STOP_WAIT;
    let busy =
        || ctls.iter().any(|c| !c.is_finished()) || !nx.intent.stopped.load(Ordering::Acquire);
    while busy() && std::time::Instant::now() < deadline {
        exec::sleep(Duration::from_millis(1)).await;
    }
    nx.gate.barrier().await;
    // Flush, then mark the metadata clean at a new generation.
    let (labels, online) = {
        let mut st = nx.lock_state();
        st.generation = next_generation(st.generation)?;
        let g = st.generation;
        let v = st.volume;
        let labels: Vec<(Arc<ChildShared>, Label)> = st
            .children
            .iter()
            .filter(|c| matches!(c.state, ChildState::Online | ChildState::Rebuilding))
            .map(|c| {
                let online = c.state == ChildState::Online;
                (
                    c.shared.clone(),
                    label_for(nx, v, c.replica, g, online, online),
                )
            })
            .collect();
        let online = labels.iter().filter(|(_, l)| l.in_sync).count();
        (labels, online)
    };
    for (child, _) in &labels {
        if let Ok(chan) = ctx.chan(child)
            && let Err(e) = persist::flush(&chan, nx.io_timeout).await
        {
            tracing::warn!(nexus = %nx.info.name, "flush at destroy failed: {e}");
        }
    }
    for r in ctx.write_labels(&labels).await {
        if let Err(e) = r {
            tracing::warn!(nexus = %nx.info.name, "metadata write at destroy failed: {e}");
        }
    }
    {
        let mut st = nx.lock_state();
        for i in 0..st.children.len() {
            let _ = st.transition(i, ChildState::Closed);
        }
    }
    nx.online_mask.store(0, Ordering::SeqCst);
    nx.publish(|r| *r = crate::routing::Routing::default());
    tracing::info!(nexus = %nx.info.name, online, "nexus destroyed");
    Ok(())
}
