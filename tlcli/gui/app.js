// The GUI of tl serve: sign in (Cognito's hosted UI, authorization code + PKCE), chat with the reply streaming in,
// the node's state and this month's spend. Plain JavaScript, no build step, nothing fetched but this door: every
// call goes to tl serve (same origin) with this start's key and the browser's own id token. Text from the model is
// inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage; // gone with the tab: tokens are not kept on disk by the browser
let config = null;
let messages = [];
let startingSince = null;

function show(id, on) { $(id).hidden = !on; }

function problem(text) {
  $("problem").textContent = text;
  show("problem", Boolean(text));
}

function notice(text) {
  $("notice").textContent = text;
  show("notice", Boolean(text));
}

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function claims(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch (e) {
    return {};
  }
}

function tokens() {
  try { return JSON.parse(store.getItem("tl.tokens") || "null"); } catch (e) { return null; }
}

async function door(path, options = {}) {
  const headers = Object.assign({ "X-TL-Key": config.key }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers }));
}

async function tokenCall(body) {
  const response = await door("/gui/token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : "the sign-in did not complete");
  return data;
}

async function idToken() {
  const kept = tokens();
  if (!kept) return null;
  const exp = claims(kept.id_token).exp || 0;
  if (exp - Date.now() / 1000 > 60) return kept.id_token;
  if (!kept.refresh_token) return null;
  try {
    const renewed = await tokenCall({ grant_type: "refresh_token", refresh_token: kept.refresh_token });
    store.setItem("tl.tokens", JSON.stringify({ id_token: renewed.id_token, refresh_token: kept.refresh_token }));
    return renewed.id_token;
  } catch (e) {
    store.removeItem("tl.tokens");
    return null;
  }
}

async function signIn() {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(48)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = b64url(crypto.getRandomValues(new Uint8Array(18)));
  store.setItem("tl.pkce", JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({
    response_type: "code", client_id: config.clientId, redirect_uri: config.redirectUri, scope: "openid email",
    state, code_challenge: challenge, code_challenge_method: "S256",
  });
  window.location.assign(`${config.authDomain}/oauth2/authorize?${query}`);
}

async function finishSignIn(params) {
  const pkce = JSON.parse(store.getItem("tl.pkce") || "null");
  store.removeItem("tl.pkce");
  window.history.replaceState({}, "", "/");
  if (params.get("error")) throw new Error(`the sign-in was refused: ${params.get("error_description") || params.get("error")}`);
  if (!pkce || params.get("state") !== pkce.state) throw new Error("the sign-in's state does not match; sign in again");
  const granted = await tokenCall({ grant_type: "authorization_code", code: params.get("code"), code_verifier: pkce.verifier });
  store.setItem("tl.tokens", JSON.stringify({ id_token: granted.id_token, refresh_token: granted.refresh_token }));
}

function describeNode(status) {
  const word = status.node;
  if (word !== "starting") startingSince = null;
  if (word === "starting") {
    if (startingSince === null) startingSince = { at: Date.now(), eta: status.eta || 90 };
    const left = Math.round(startingSince.eta - (Date.now() - startingSince.at) / 1000);
    return left > 0 ? `node: starting, about ${left} s left` : "node: starting, taking longer than usual";
  }
  const words = {
    asleep: "node: asleep (a message wakes it)", ready: "node: ready", busy: "node: busy",
    draining: "node: finishing its jobs", stopping: "node: stopping", resizing: "node: changing shape",
    held: "node: held by the budget", "no-node": "node: not deployed",
  };
  const shape = status.shape && (word === "ready" || word === "busy") ? ` (${status.shape})` : "";
  return (words[word] || `node: ${word}`) + shape;
}

async function pollStatus() {
  let next = 3000;
  try {
    const token = await idToken();
    if (token) {
      const response = await door("/gui/status", { headers: { Authorization: `Bearer ${token}` } });
      if (response.ok) {
        const status = await response.json();
        $("node").textContent = describeNode(status);
        $("node").dataset.state = status.node;
        $("spend").textContent = status.spend_eur === null
          ? `spend: not known yet, budget €${status.budget_eur}`
          : `€${status.spend_eur.toFixed(2)} of €${status.budget_eur} this month`;
        if (status.node === "starting") next = 1000;
      }
    }
  } catch (e) {
    $("node").textContent = "node: status unavailable";
  }
  window.setTimeout(pollStatus, next);
}

function entry(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const meta = document.createElement("span");
  meta.className = "meta";
  item.append(body, meta);
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body, meta };
}

function explain(status, data, retryAfter) {
  const message = (data && data.error && data.error.message) || `HTTP ${status}`;
  if (status === 429) {
    return `Too many requests (${message}). Your message is kept: send it again in ${retryAfter || "a few"} s.`;
  }
  if (status === 401) return `${message}. Sign in again.`;
  return message;
}

async function send(text) {
  const token = await idToken();
  if (!token) { show("chat", false); show("signin", true); return; }
  notice("");
  messages.push({ role: "user", content: text });
  const asked = entry("user", text);
  const answer = entry("assistant", "");
  answer.meta.textContent = "sending…";
  $("send").disabled = true;
  try {
    const response = await door("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ model: "tinyllama-shape", messages, stream: true }),
    });
    if (!response.ok) {
      let data = null;
      try { data = await response.json(); } catch (e) { /* not JSON */ }
      messages.pop(); // refused: nothing was sent on, and nothing is lost — the text goes back to the box
      answer.item.remove();
      asked.item.remove();
      if (!$("prompt").value) $("prompt").value = text;
      notice(explain(response.status, data, response.headers.get("Retry-After")));
      return;
    }
    const reply = await readStream(response, answer);
    messages.push({ role: "assistant", content: reply });
  } catch (e) {
    answer.meta.textContent = `lost the answer: ${e.message}`;
  } finally {
    $("send").disabled = false;
  }
}

async function readStream(response, answer) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith(": ")) {
          answer.meta.textContent = line.slice(2); // the node's state while the stream waits
        } else if (line.startsWith("data: ") && line !== "data: [DONE]") {
          const chunk = JSON.parse(line.slice(6));
          if (chunk.id && !answer.item.dataset.job) answer.item.dataset.job = chunk.id.replace(/^chatcmpl-/, "");
          if (chunk.error) { answer.meta.textContent = chunk.error.message; answer.item.classList.add("failed"); continue; }
          for (const choice of chunk.choices || []) {
            const piece = (choice.delta && choice.delta.content) || "";
            if (piece) { text += piece; answer.body.textContent = text; answer.meta.textContent = "…"; }
            if (choice.finish_reason) answer.meta.textContent = `${chunk.model} · ${choice.finish_reason}`;
          }
        }
      }
    }
  }
  return text;
}

async function main() {
  config = await (await fetch("/gui/config.json")).json();
  const home = new URL(config.redirectUri).origin;
  if (window.location.origin !== home) { // the callback URL's origin, where the sign-in comes back
    window.location.replace(home + window.location.pathname + window.location.search);
    return;
  }
  if ((!config.clientId || !config.authDomain) && !tokens()) {
    problem("Sign-in is not configured: start tl serve with TL_COGNITO_CLIENT_ID and TL_COGNITO_DOMAIN set.");
    return;
  }
  const params = new URLSearchParams(window.location.search);
  if (window.location.pathname === "/callback") {
    try { await finishSignIn(params); } catch (e) { problem(e.message); }
  }
  $("signin-button").addEventListener("click", signIn);
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); }
  });
  $("new").addEventListener("click", () => { messages = []; $("log").replaceChildren(); notice(""); });
  $("signout").addEventListener("click", () => { store.removeItem("tl.tokens"); window.location.assign("/"); });
  const signedIn = Boolean(await idToken());
  show("signin", !signedIn);
  show("chat", signedIn);
  if (signedIn) { pollStatus(); $("prompt").focus(); }
}

main().catch((e) => problem(`The page could not start: ${e.message}`));
