//! The schema registry on the stream: one subject per (type, version),
//! `evh.<prefix>.schema.<type>.<version>`, holding exactly one message.
//!
//! A put reads the subject; if empty it publishes the record fenced on "no message yet"
//! (`Nats-Expected-Last-Subject-Sequence: 0`), so of racing puts of one version, from any
//! daemon, only the first lands; a loser reads back what landed and compares it like any
//! put. Nothing compacts or expires these subjects (they are not last-value subjects and
//! carry no events), so a schema lives as long as the stream.

use async_nats::jetstream::message::StreamMessage;

use super::batch::{self, Batch, BatchError, Msg};
use super::{Shared, read};
use crate::log::schema::{check_schema, decide_put, decode_schema, encode_schema};
use crate::log::{LogError, SchemaPut, SchemaRecord};

fn decode(msg: &StreamMessage) -> Result<SchemaRecord, LogError> {
    decode_schema(&msg.payload)
}

pub(super) async fn put(s: &Shared, record: SchemaRecord) -> Result<SchemaPut, LogError> {
    check_schema(&record)?;
    let subject = s.layout.schema(&record.ty, &record.version);
    // Two rounds at most: a lost race means the subject now has its one message.
    for _ in 0..2 {
        let existing = read::last(&s.stream, &subject).await?;
        let existing = existing.as_ref().map(decode).transpose()?;
        let outcome = decide_put(existing.as_ref(), &record)?;
        if outcome == SchemaPut::Unchanged {
            return Ok(outcome);
        }
        let mut batch = Batch::default();
        batch.fence(&subject, 0);
        batch.push(Msg::new(subject.clone(), encode_schema(&record)));
        match batch::publish(&s.client, batch, s.max_batch).await {
            Ok(_) => {
                s.count(|c| c.transactions += 1);
                return Ok(SchemaPut::Created);
            }
            Err(BatchError::Stale) => continue,
            Err(BatchError::Failed(e)) => {
                s.count(|c| c.failed_transactions += 1);
                return Err(e);
            }
        }
    }
    Err(super::storage(format!(
        "`{subject}` was written concurrently but reads back empty"
    )))
}

pub(super) async fn list(s: &Shared) -> Result<Vec<SchemaRecord>, LogError> {
    let msgs = read::scan(s, &s.layout.schemas(), 1, u64::MAX, usize::MAX, |_| true).await?;
    let mut out = msgs.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| (&a.ty, &a.version).cmp(&(&b.ty, &b.version)));
    Ok(out)
}
