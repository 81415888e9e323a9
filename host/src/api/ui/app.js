// The console: a hash router over a few pages, each built from /v1 answers.
// DOM is made with h() and text nodes only (nothing from the daemon is parsed as
// HTML). Pages that poll register their timers with every(); leaving the page
// stops them, and live tails are closed the same way.

import * as api from "./api.js";

const $ = (sel) => document.querySelector(sel);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const enc = encodeURIComponent;
const json = (v) => h("pre", null, JSON.stringify(v, null, 2));
const badge = (text) => h("span", { class: `badge ${text}` }, text);
const fmtNum = (n) => (typeof n === "number" ? n.toLocaleString("en") : "–");

// Timers and streams of the current page, ended on navigation.
let cleanups = [];
function every(ms, fn) {
  fn();
  const t = setInterval(fn, ms);
  cleanups.push(() => clearInterval(t));
}
function onLeave(fn) {
  cleanups.push(fn);
}

// ---- dialogs -------------------------------------------------------------

function confirmAction(text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// Asked by api.js when a request answers 401: resolves to a token or null.
// Requests refused while the dialog is open wait for the same answer.
let asking = null;
function askToken(reason, hadToken, intro) {
  if (asking) return asking;
  const dialog = $("#token-dialog");
  const error = $("#token-error");
  error.hidden = !hadToken;
  error.textContent = hadToken ? `Refused: ${reason}` : "";
  $("#token-reason").textContent = intro
    || (hadToken ? "The daemon refused the token. Enter the right one." : `This daemon needs the operator's token: ${reason}`);
  const input = $("#token-input");
  input.value = "";
  asking = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      asking = null;
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    }, { once: true });
  });
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return asking;
}
api.onTokenNeeded(askToken);

// A message area for the outcome of an action.
function outcome(id) {
  const el = h("p", { id, class: "muted" });
  el.show = (text, ok = true) => {
    el.className = ok ? "ok" : "error";
    el.textContent = text;
  };
  return el;
}

async function attempt(out, fn) {
  try {
    const text = await fn();
    if (text) out.show(text, true);
  } catch (e) {
    out.show(e.message || String(e), false);
  }
}

// ---- overview --------------------------------------------------------------

// Previous end-offset totals per topic, for the publish rate.
const seen = new Map();

function rateOf(name, total) {
  const now = performance.now();
  const prev = seen.get(name);
  seen.set(name, { total, at: now });
  if (!prev || now - prev.at < 200) return prev ? prev.rate : null;
  const rate = ((total - prev.total) * 1000) / (now - prev.at);
  seen.get(name).rate = rate;
  return rate;
}

function pluginRow(p) {
  if (p.state === "failed") {
    return h("tr", { "data-plugin": p.name },
      h("td", null, h("a", { href: `#/plugins/${enc(p.name)}` }, p.name)),
      h("td", null, badge("failed")),
      h("td", { colspan: 6, class: "error" }, p.last_error),
    );
  }
  const dlq = p.dead_letters !== undefined ? `${fmtNum(p.dead_letters)} / ${fmtNum(p.dead_lettered)}` : fmtNum(p.dead_lettered);
  const problem = [
    p.pending_error ? h("div", { class: "error" }, `reload failed: ${p.pending_error}`) : null,
    p.last_error ? h("div", { class: "error" }, p.last_error) : null,
  ];
  return h("tr", { "data-plugin": p.name },
    h("td", null, h("a", { href: `#/plugins/${enc(p.name)}` }, p.name)),
    h("td", null, badge(p.state)),
    h("td", null, p.version, h("span", { class: "muted" }, ` (load ${p.load_number})`)),
    h("td", { class: "num" }, fmtNum(p.lag)),
    h("td", { class: "num" }, fmtNum(p.processed)),
    h("td", { class: "num" }, fmtNum(p.failed)),
    h("td", { class: "num" }, h("a", { href: `#/dlq?plugin=${enc(p.name)}` }, dlq)),
    h("td", null, problem),
  );
}

function healthView({ status, body }) {
  const ok = status === 200;
  const parts = [h("p", null, badge(ok ? "ok" : "error"), ` /healthz answered ${status}`)];
  if (body && typeof body === "object") {
    const rows = Object.entries(body).filter(([k]) => k !== "status");
    if (body.status) parts.push(h("p", null, "status: ", h("b", null, String(body.status))));
    if (rows.length) parts.push(json(Object.fromEntries(rows)));
  } else if (body) {
    parts.push(h("pre", null, String(body)));
  }
  return parts;
}

async function overview(root) {
  const topicsBody = h("tbody", { id: "topics" });
  const pluginsBody = h("tbody", { id: "plugins" });
  const healthBox = h("div", { id: "health" });
  const created = outcome("create-topic-result");
  const nameIn = h("input", { name: "name", required: true, placeholder: "orders" });
  const partsIn = h("input", { name: "partitions", type: "number", min: 1, value: "1" });
  const createForm = h("form", { class: "inline", id: "create-topic",
    onsubmit: (e) => {
      e.preventDefault();
      attempt(created, async () => {
        await api.call("POST", "/v1/topics", { json: { name: nameIn.value.trim(), partitions: Number(partsIn.value) } });
        return `created topic ${nameIn.value.trim()}`;
      });
    } },
    h("label", null, "Name", nameIn), h("label", null, "Partitions", partsIn), h("button", null, "Create topic"));
  root.append(
    h("h1", null, "Overview"),
    h("section", null, h("h2", null, "Plugins"),
      h("table", null,
        h("thead", null, h("tr", null, ["Plugin", "State", "Version", "Lag", "Handled", "Failed", "Dead letters", "Problems"].map((t, i) => h("th", { class: i >= 3 && i <= 6 ? "num" : null }, t)))),
        pluginsBody)),
    h("div", { class: "grid" },
      h("section", null, h("h2", null, "Topics"),
        h("table", null,
          h("thead", null, h("tr", null, h("th", null, "Topic"), h("th", { class: "num" }, "Partitions"), h("th", null, "End offsets"), h("th", { class: "num" }, "Events"), h("th", { class: "num" }, "Publish rate"))),
          topicsBody),
        h("h2", { style: null }, " "), createForm, created),
      h("section", null, h("h2", null, "Health"), healthBox)),
  );
  every(2000, async () => {
    try {
      const [{ topics }, { plugins }, health] = await Promise.all([api.get("/v1/topics"), api.get("/v1/plugins"), api.health()]);
      topicsBody.replaceChildren(...topics.map((t) => {
        const total = t.partitions.reduce((s, p) => s + (p.end_offset - p.start_offset), 0);
        const rate = rateOf(t.name, t.partitions.reduce((s, p) => s + p.end_offset, 0));
        return h("tr", { "data-topic": t.name },
          h("td", null, h("a", { href: `#/topics/${enc(t.name)}` }, t.name)),
          h("td", { class: "num" }, t.partition_count),
          h("td", { class: "mono" }, t.partitions.map((p) => `${p.partition}:${p.end_offset}`).join(" ")),
          h("td", { class: "num" }, fmtNum(total)),
          h("td", { class: "num" }, rate === null || rate === undefined ? "–" : `${rate.toFixed(1)}/s`));
      }));
      if (!topics.length) topicsBody.replaceChildren(h("tr", null, h("td", { colspan: 5, class: "muted" }, "No topics yet.")));
      pluginsBody.replaceChildren(...plugins.map(pluginRow));
      if (!plugins.length) pluginsBody.replaceChildren(h("tr", null, h("td", { colspan: 8, class: "muted" }, "No plugins loaded.")));
      healthBox.replaceChildren(...healthView(health));
    } catch (e) {
      healthBox.replaceChildren(h("p", { class: "error" }, e.message));
    }
  });
}

// ---- one plugin ------------------------------------------------------------

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", null, k), h("dd", null, v === null ? "–" : v)]));
}

async function pluginPage(root, name) {
  const details = h("div", { id: "plugin-details" });
  const stateBody = h("tbody", { id: "plugin-state" });
  const prefixIn = h("input", { placeholder: "key prefix" });
  const seekOut = outcome("seek-result");
  const seekTopic = h("input", { name: "topic", required: true });
  const seekPart = h("input", { name: "partition", type: "number", min: 0, value: "0" });
  const seekOff = h("input", { name: "offset", type: "number", min: 0, required: true });
  const loadState = () => attempt(outcome("x"), async () => {
    const s = await api.get(`/v1/plugins/${enc(name)}/state?prefix=${enc(prefixIn.value)}&limit=200`);
    stateBody.replaceChildren(...s.entries.map((e) => h("tr", null, h("td", { class: "mono" }, e.key), h("td", null, json(e.value)))));
    if (!s.entries.length) stateBody.replaceChildren(h("tr", null, h("td", { colspan: 2, class: "muted" }, "No state.")));
    if (s.truncated) stateBody.append(h("tr", null, h("td", { colspan: 2, class: "muted" }, "More keys exist: narrow the prefix.")));
  });
  root.append(
    h("h1", null, "Plugin ", h("span", { class: "mono" }, name)),
    details,
    h("section", null, h("h2", null, "Seek"),
      h("p", { class: "muted" }, "Moves this plugin's consumer offset; applied between batches."),
      h("form", { class: "inline", id: "seek",
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { topic: seekTopic.value.trim(), partition: Number(seekPart.value), offset: Number(seekOff.value) };
          if (!(await confirmAction(`Move ${name}'s offset on ${body.topic}/${body.partition} to ${body.offset}?`))) return;
          attempt(seekOut, async () => {
            await api.call("POST", `/v1/plugins/${enc(name)}/offsets`, { json: body });
            return `offset of ${body.topic}/${body.partition} set to ${body.offset}`;
          });
        } },
        h("label", null, "Topic", seekTopic), h("label", null, "Partition", seekPart), h("label", null, "Offset", seekOff), h("button", null, "Seek")),
      seekOut),
    h("section", null, h("h2", null, "State"),
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); loadState(); } }, prefixIn, h("button", null, "Show")),
      h("table", null, h("thead", null, h("tr", null, h("th", null, "Key"), h("th", null, "Value"))), stateBody)),
  );
  loadState();
  every(2000, async () => {
    try {
      const { plugins } = await api.get("/v1/plugins");
      const p = plugins.find((x) => x.name === name);
      if (!p) {
        details.replaceChildren(h("section", null, h("p", { class: "error" }, `No plugin named ${name} is loaded.`)));
        return;
      }
      if (p.state === "failed") {
        details.replaceChildren(h("section", null, kv([["state", badge("failed")], ["file", p.file], ["failed at", p.failed_at]]), h("p", { class: "error" }, p.last_error)));
        return;
      }
      const grants = p.grants
        ? [h("div", null, "emit: ", p.grants.emit.length ? h("span", { class: "mono" }, p.grants.emit.join(", ")) : h("span", { class: "muted" }, "none")),
          h("div", null, "state: ", p.grants.state ? "yes" : "no")]
        : h("span", { class: "muted" }, "not reported");
      const mean = p.call_latency && p.call_latency.count ? `${((p.call_latency.sum / p.call_latency.count) * 1000).toFixed(2)} ms over ${fmtNum(p.call_latency.count)} calls` : "–";
      details.replaceChildren(
        h("div", { class: "grid" },
          h("section", null, h("h2", null, "Version"), kv([
            ["state", badge(p.state)], ["version", p.version], ["digest", h("span", { class: "mono" }, p.digest)],
            ["load number", p.load_number], ["grants", grants]])),
          h("section", null, h("h2", null, "Counts"), kv([
            ["handled", fmtNum(p.processed)], ["failed", fmtNum(p.failed)],
            ["dead-lettered", h("a", { href: `#/dlq?plugin=${enc(name)}` }, fmtNum(p.dead_lettered))],
            ["dead letters now", p.dead_letters === undefined ? undefined : fmtNum(p.dead_letters)],
            ["lag", fmtNum(p.lag)], ["mean call", mean], ["consumer restarts", fmtNum(p.consumer_restarts)]]))),
        h("section", null, h("h2", null, "Errors"), kv([
          ["last error", p.last_error ? h("span", { class: "error", id: "last-error" }, p.last_error) : null],
          ["pending failed reload", p.pending_error === undefined ? undefined : p.pending_error ? h("span", { class: "error", id: "pending-error" }, p.pending_error) : null],
          ["consumer error", p.consumer_error ? h("span", { class: "error" }, p.consumer_error) : null]])),
        h("div", { class: "grid" },
          h("section", null, h("h2", null, "Subscriptions"), h("table", null,
            h("thead", null, h("tr", null, h("th", null, "Topic"), h("th", null, "Event type"))),
            h("tbody", null, p.subscriptions.map((s) => h("tr", null, h("td", { class: "mono" }, s.topic), h("td", { class: "mono" }, s.event_type)))))),
          h("section", null, h("h2", null, "Lag per partition"), h("table", null,
            h("thead", null, h("tr", null, h("th", null, "Topic"), h("th", { class: "num" }, "Partition"), h("th", { class: "num" }, "Committed"), h("th", { class: "num" }, "End"), h("th", { class: "num" }, "Lag"))),
            h("tbody", { id: "partitions" }, p.partitions.map((x) => h("tr", null,
              h("td", null, h("a", { href: `#/topics/${enc(x.topic)}` }, x.topic)), h("td", { class: "num" }, x.partition),
              h("td", { class: "num" }, fmtNum(x.committed)), h("td", { class: "num" }, fmtNum(x.end)), h("td", { class: "num" }, fmtNum(x.lag)))))))),
      );
    } catch (e) {
      details.replaceChildren(h("p", { class: "error" }, e.message));
    }
  });
}

// ---- dead letters ----------------------------------------------------------

const KINDS = ["rejected", "trap", "timeout", "out-of-memory", "retries-exhausted", "host-error"];

async function dlqPage(root, params) {
  const plugin = params.get("plugin") || "";
  const kind = params.get("kind") || "";
  const out = outcome("dlq-result");
  const list = h("div", { id: "letters" });
  const pluginSel = h("select", { name: "plugin" }, h("option", { value: "" }, "all plugins"));
  const kindSel = h("select", { name: "kind" }, h("option", { value: "" }, "all kinds"), KINDS.map((k) => h("option", { value: k }, k)));
  kindSel.value = kind;
  const filter = () => {
    const q = new URLSearchParams();
    if (pluginSel.value) q.set("plugin", pluginSel.value);
    if (kindSel.value) q.set("kind", kindSel.value);
    location.hash = `#/dlq${q.size ? `?${q}` : ""}`;
  };
  pluginSel.addEventListener("change", filter);
  kindSel.addEventListener("change", filter);
  const replayAll = h("button", { id: "replay-all", disabled: !plugin,
    title: plugin ? null : "choose a plugin first",
    onclick: async () => {
      if (!(await confirmAction(`Replay every dead letter of ${plugin} on its current version?`))) return;
      attempt(out, async () => {
        const r = await api.call("POST", `/v1/dlq/replay?plugin=${enc(plugin)}`);
        await load();
        return `replayed ${plugin}: ${r.succeeded} succeeded, ${r.failed} failed again`;
      });
    } }, "Replay all of this plugin");
  root.append(
    h("h1", null, "Dead letters"),
    h("section", null,
      h("div", { class: "inline", style: null }, h("label", null, "Plugin", pluginSel), " ", h("label", null, "Kind", kindSel), " ", replayAll),
      out),
    h("section", null, list),
  );
  api.get("/v1/plugins").then(({ plugins }) => {
    const names = [...new Set(plugins.map((p) => p.name))];
    if (plugin && !names.includes(plugin)) names.push(plugin);
    pluginSel.append(...names.map((n) => h("option", { value: n }, n)));
    pluginSel.value = plugin;
  }, () => {});

  const letterView = (d) => {
    const act = (label, cls, question, fn) => h("button", { class: cls, "data-action": label.toLowerCase(),
      onclick: async () => {
        if (!(await confirmAction(question))) return;
        attempt(out, async () => {
          const text = await fn();
          await load();
          return text;
        });
      } }, label);
    return h("details", { class: "letter", "data-id": d.id },
      h("summary", null, h("b", null, `#${d.id}`), " ", d.plugin, " ", badge(d.error_kind), " ",
        h("span", { class: "mono" }, `${d.event.type} ${d.event.topic}/${d.event.partition}@${d.event.offset}`), " ",
        h("span", { class: "muted" }, `${d.attempts} attempt(s), last ${d.last_failure}`)),
      h("div", { class: "actions" },
        act("Replay", null, `Replay dead letter #${d.id} on the current version of ${d.plugin}?`, async () => {
          const r = await api.call("POST", `/v1/dlq/${d.id}/replay`);
          return r.outcome === "succeeded" ? `#${d.id} replayed: succeeded` : `#${d.id} failed again (now #${r.new_id}): ${r.message}`;
        }),
        act("Discard", "danger", `Discard dead letter #${d.id} for good?`, async () => {
          await api.call("DELETE", `/v1/dlq/${d.id}`);
          return `#${d.id} discarded`;
        })),
      kv([["error", h("span", { class: "error" }, d.message)], ["plugin version", d.plugin_version],
        ["digest", h("span", { class: "mono" }, d.plugin_digest)], ["first failure", d.first_failure], ["last failure", d.last_failure]]),
      h("h2", null, "Event"), json(d.event));
  };

  let after = null;
  async function load(more = false) {
    try {
      if (!more) after = null;
      const q = new URLSearchParams({ limit: "200" });
      if (plugin) q.set("plugin", plugin);
      if (after !== null) q.set("after", after);
      const page = await api.get(`/v1/dlq?${q}`);
      after = page.next_after;
      const shown = page.dead_letters.filter((d) => !kind || d.error_kind === kind).map(letterView);
      if (more) list.lastChild.remove();
      else list.replaceChildren();
      list.append(...shown);
      if (!list.querySelector(".letter")) list.append(h("p", { class: "muted", id: "no-letters" }, "No dead letters."));
      if (after !== null) list.append(h("button", { class: "quiet", onclick: () => load(true) }, "Load more"));
    } catch (e) {
      list.replaceChildren(h("p", { class: "error" }, e.message));
    }
  }
  await load();
}

// ---- a topic: live tail and events by offset -------------------------------

function eventRow(e) {
  return h("details", { class: "event", "data-id": e.id, "data-offset": `${e.partition}:${e.offset}` },
    h("summary", { class: "mono" }, `${e.partition}:${e.offset} `, h("b", null, e.type), ` ${e.id}`, e.subject ? ` subject=${e.subject}` : "", h("span", { class: "muted" }, ` ${e.time}`)),
    json(e));
}

async function topicPage(root, name, params) {
  const info = h("p", { class: "muted" });
  const tailState = h("span", { id: "tail-state" }, badge("connecting"));
  const tailList = h("div", { id: "tail-events" }, h("p", { class: "muted" }, "Waiting for new events…"));
  const partSel = h("select", { name: "partition" });
  const fromIn = h("input", { name: "from", type: "number", min: 0, value: params.get("from") || "0" });
  const limitIn = h("input", { name: "limit", type: "number", min: 1, max: 1000, value: "50" });
  const readList = h("div", { id: "read-events" });
  const readOut = outcome("read-result");
  root.append(
    h("h1", null, "Topic ", h("span", { class: "mono" }, name)), info,
    h("section", null, h("h2", null, "Live tail ", tailState), tailList),
    h("section", null, h("h2", null, "Events by offset"),
      h("form", { class: "inline", id: "read", onsubmit: (e) => { e.preventDefault(); read(); } },
        h("label", null, "Partition", partSel), h("label", null, "From offset", fromIn), h("label", null, "Limit", limitIn),
        h("button", null, "Read"),
        h("button", { type: "button", class: "quiet", onclick: () => { fromIn.value = readList.dataset.next || fromIn.value; read(); } }, "Next page")),
      readOut, readList),
  );
  async function read() {
    await attempt(readOut, async () => {
      const r = await api.get(`/v1/topics/${enc(name)}/events?partition=${partSel.value || 0}&from=${fromIn.value || 0}&limit=${limitIn.value || 50}`);
      readList.dataset.next = r.next_offset;
      readList.replaceChildren(...r.events.map(eventRow));
      if (!r.events.length) readList.replaceChildren(h("p", { class: "muted" }, "No events from there."));
      return "";
    });
  }
  let topic;
  try {
    topic = (await api.get("/v1/topics")).topics.find((t) => t.name === name);
  } catch (e) {
    info.replaceChildren(h("span", { class: "error" }, e.message));
    return;
  }
  if (!topic) {
    info.replaceChildren(h("span", { class: "error" }, `No topic named ${name}.`));
    return;
  }
  info.textContent = `${topic.partition_count} partition(s); end offsets ${topic.partitions.map((p) => `${p.partition}:${p.end_offset}`).join(" ")}`;
  partSel.append(...topic.partitions.map((p) => h("option", { value: p.partition }, p.partition)));
  partSel.value = params.get("partition") || "0";
  read();
  // One stream for all partitions, from the smallest end; what each partition
  // had before the page opened is skipped here, so only new events show.
  const ends = topic.partitions.map((p) => p.end_offset);
  const from = Math.min(...ends);
  let first = true;
  const close = api.tail(`/v1/topics/${enc(name)}/events?follow=true&from=${from}`,
    (e) => {
      if (e.offset < ends[e.partition]) return;
      if (first) tailList.replaceChildren();
      first = false;
      tailList.prepend(eventRow(e));
      while (tailList.childElementCount > 200) tailList.lastChild.remove();
    },
    (state, detail) => tailState.replaceChildren(badge(state), detail ? h("span", { class: "error" }, ` ${detail}`) : ""));
  onLeave(close);
}

// ---- schemas ----------------------------------------------------------------

async function schemasPage(root) {
  const list = h("tbody", { id: "schemas" });
  const out = outcome("schema-result");
  const typeIn = h("input", { name: "type", required: true, placeholder: "user.created" });
  const versionIn = h("input", { name: "version", required: true, value: "1" });
  const schemaIn = h("textarea", { name: "schema", required: true }, '{\n  "type": "object"\n}');
  const load = async () => {
    const { schemas } = await api.get("/v1/schemas");
    list.replaceChildren(...schemas.map((s) => h("tr", null, h("td", { class: "mono" }, s.type), h("td", null, s.version), h("td", null, s.registered_at),
      h("td", null, h("details", null, h("summary", null, "schema"), json(s.schema))))));
    if (!schemas.length) list.replaceChildren(h("tr", null, h("td", { colspan: 4, class: "muted" }, "No schemas registered.")));
  };
  root.append(
    h("h1", null, "Schemas"),
    h("section", null, h("table", null, h("thead", null, h("tr", null, h("th", null, "Type"), h("th", null, "Version"), h("th", null, "Registered"), h("th", null, "JSON Schema"))), list)),
    h("section", null, h("h2", null, "Register a schema"),
      h("form", { class: "stack", onsubmit: (e) => {
        e.preventDefault();
        attempt(out, async () => {
          const r = await api.call("PUT", `/v1/schemas/${enc(typeIn.value.trim())}/${enc(versionIn.value.trim())}`, { body: schemaIn.value, contentType: "application/json" });
          await load();
          return r.created ? `registered ${r.type} version ${r.version}` : `${r.type} version ${r.version} was already registered`;
        });
      } }, h("label", null, "Event type", typeIn), h("label", null, "Version", versionIn), h("label", null, "JSON Schema", schemaIn), h("button", null, "Register")),
      out),
  );
  await attempt(out, async () => { await load(); return ""; });
}

// ---- publish ----------------------------------------------------------------

function publishPage(root) {
  const out = outcome("publish-result");
  const topicIn = h("input", { name: "topic", placeholder: "derived from the type when empty" });
  const typeIn = h("input", { name: "type", required: true, placeholder: "user.created" });
  const sourceIn = h("input", { name: "source", required: true, value: "evhost-console" });
  const subjectIn = h("input", { name: "subject", placeholder: "the key: same subject, same partition" });
  const idIn = h("input", { name: "id", placeholder: "assigned by the host when empty" });
  const dataIn = h("textarea", { name: "data" }, "{}");
  root.append(
    h("h1", null, "Publish an event"),
    h("section", null,
      h("form", { class: "stack", id: "publish", onsubmit: (e) => {
        e.preventDefault();
        attempt(out, async () => {
          let data;
          try {
            data = dataIn.value.trim() ? JSON.parse(dataIn.value) : undefined;
          } catch (err) {
            throw new Error(`data is not JSON: ${err.message}`);
          }
          const event = { specversion: "1.0", type: typeIn.value.trim(), source: sourceIn.value.trim() };
          if (subjectIn.value.trim()) event.subject = subjectIn.value.trim();
          if (idIn.value.trim()) event.id = idIn.value.trim();
          if (data !== undefined) {
            event.datacontenttype = "application/json";
            event.data = data;
          }
          const topic = topicIn.value.trim();
          const path = topic ? `/v1/topics/${enc(topic)}/events` : "/v1/events";
          const r = await api.call("POST", path, { json: event, contentType: "application/cloudevents+json" });
          const p = r.events[0];
          return `published ${p.id} to ${p.topic} partition ${p.partition} at offset ${p.offset}`;
        });
      } },
      h("label", null, "Topic", topicIn), h("label", null, "Type", typeIn), h("label", null, "Source", sourceIn),
      h("label", null, "Subject", subjectIn), h("label", null, "Id", idIn), h("label", null, "Data (JSON)", dataIn),
      h("button", { id: "publish-button" }, "Publish")),
      out),
  );
}

// ---- router -----------------------------------------------------------------

async function route() {
  for (const c of cleanups) c();
  cleanups = [];
  const root = $("#page");
  root.replaceChildren();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "plugins" && parts[1]) await pluginPage(root, parts[1]);
    else if (parts[0] === "dlq") await dlqPage(root, params);
    else if (parts[0] === "topics" && parts[1]) await topicPage(root, parts[1], params);
    else if (parts[0] === "schemas") await schemasPage(root);
    else if (parts[0] === "publish") publishPage(root);
    else await overview(root);
  } catch (e) {
    root.append(h("p", { class: "error" }, e.message || String(e)));
  }
}

$("#token-button").addEventListener("click", async () => {
  const t = await askToken("", false, "The token is sent as a bearer header with every request; it is kept for this tab only.");
  if (t !== null) api.setToken(t);
});
window.addEventListener("hashchange", route);
route();
