//! `evhost:plugin/emit`: validates and buffers emitted events, filling the
//! envelope the way the host fills a published one.

use crate::event::{self, Event};
use crate::runtime::Emit;
use crate::runtime::bindings::OutgoingEvent;
use crate::runtime::bindings::evhost::plugin::emit::Host;
use crate::runtime::context::CallState;

impl Host for CallState {
    fn emit(&mut self, out: OutgoingEvent) -> Result<String, String> {
        let scope = &self.scope;
        let Some(current) = &self.current else {
            return Err("emit is only possible while handling an event".into());
        };
        if out.type_.is_empty() {
            return Err("emitted event has an empty `type`".into());
        }
        if !scope.grants.may_emit(&out.type_) {
            let message = scope.grants.refuse_emit(&scope.name, &out.type_);
            return Err(self.refuse(message));
        }
        if self.effects.emits.len() >= scope.max_emits_per_call {
            return Err(format!(
                "more than {} emits in one call",
                scope.max_emits_per_call
            ));
        }
        let size = out.data.as_ref().map_or(0, Vec::len);
        if size > scope.max_event_bytes {
            return Err(format!(
                "emitted data of {size} bytes exceeds the limit of {}",
                scope.max_event_bytes
            ));
        }
        let topic = out
            .topic
            .unwrap_or_else(|| event::topic_for_type(&out.type_));
        event::validate_topic(&topic)?;
        let id = match out.id {
            Some(id) if id.is_empty() => return Err("emitted event has an empty `id`".into()),
            Some(id) => id,
            None => event::new_event_id(),
        };
        let mut extensions = std::collections::BTreeMap::new();
        for (name, value) in out.extensions {
            event::validate_extension_name(&name)?;
            extensions.insert(name, value);
        }
        let cause = &current.event.event;
        let datacontenttype = out
            .datacontenttype
            .or_else(|| out.data.as_ref().map(|_| "application/json".to_owned()));
        let event = Event {
            id: id.clone(),
            source: format!("evhost://plugin/{}", scope.name),
            specversion: event::SPEC_VERSION.to_owned(),
            ty: out.type_,
            subject: out.subject,
            time: event::now_rfc3339(),
            datacontenttype,
            dataschema: out.dataschema,
            data: out.data,
            correlationid: cause.correlationid.clone(),
            causationid: Some(cause.id.clone()),
            actor: out.actor.or_else(|| cause.actor.clone()),
            extensions,
            stream: None,
            streamversion: None,
        };
        self.effects.emits.push(Emit { topic, event });
        Ok(id)
    }
}
