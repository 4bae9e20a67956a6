//! The `EventBus` contract (src/conformance.rs), run once per implementation.

mod common;

use std::sync::{Arc, Mutex, PoisonError};

use telenet_bus::memory::MemoryBus;
use telenet_bus::rabbitmq::RabbitBus;
use telenet_bus::{MeteredBus, SharedBus, conformance};
use telenet_kit::metrics::Metrics;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_bus_conforms() {
    let outcome =
        conformance::run_all(|retry| async move { Arc::new(MemoryBus::new(retry)) as SharedBus })
            .await;
    if let Err(report) = outcome {
        panic!("{report}");
    }
}

/// The metrics wrapper must not change what the bus does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metered_memory_bus_conforms() {
    let outcome = conformance::run_all(|retry| async move {
        let inner = Arc::new(MemoryBus::new(retry)) as SharedBus;
        MeteredBus::new(inner, Metrics::new()) as SharedBus
    })
    .await;
    if let Err(report) = outcome {
        panic!("{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_bus_conforms() {
    // Fail up front, with instructions, if there is no broker.
    let probe = common::rabbit(conformance::retry_policy()).await;
    common::clean_up(&[probe]).await;

    let created: Arc<Mutex<Vec<Arc<RabbitBus>>>> = Arc::default();
    let outcome = conformance::run_all(|retry| {
        let created = Arc::clone(&created);
        async move {
            let bus = common::rabbit(retry).await;
            created
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&bus));
            bus as SharedBus
        }
    })
    .await;
    let buses = std::mem::take(&mut *created.lock().unwrap_or_else(PoisonError::into_inner));
    common::clean_up(&buses).await;
    if let Err(report) = outcome {
        panic!("{report}");
    }
}
