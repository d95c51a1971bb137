// Actions on the run page: ask the page what the action will do, confirm, then start the DAG run
// through Airflow's own REST API (same origin, the Airflow session cookie authenticates the call).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const panel = document.querySelector(".actions");
  if (!panel) return;
  const base = document.body.dataset.base;
  const dialog = document.getElementById("confirm");
  const result = panel.querySelector(".result");
  const counter = panel.querySelector(".selection");
  const picked = () => [...document.querySelectorAll("input.pick:checked")].map((box) => box.value);

  // One action at a time: from its plan to Airflow's answer every button is disabled, so a double click
  // (two clicks before the first plan comes back) cannot post two runs after one confirmation.
  let busy = false;
  const refresh = () => {
    const count = new Set(picked()).size;
    if (counter) counter.textContent = `${count} selected`;  // none where nothing acts on a selection
    panel.querySelectorAll("button[data-action]").forEach((b) => {
      b.disabled = busy || (b.hasAttribute("data-selected") && count === 0);
    });
  };
  document.addEventListener("change", (event) => { if (event.target.matches("input.pick")) refresh(); });
  refresh();

  const confirmed = (message) => new Promise((resolve) => {
    dialog.querySelector(".message").textContent = message;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });

  const show = (text, isError) => {
    result.textContent = text;
    result.classList.toggle("error", Boolean(isError));
  };

  panel.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || busy) return;
    busy = true;
    refresh();
    try {
      await act(button);
    } catch (error) {  // no answer, or not one we can read: said, never silent
      show(`${button.textContent}: ${error}`, true);
    } finally {
      busy = false;
      refresh();
    }
  });

  const act = async (button) => {
    show(`${button.textContent}: waiting for your confirmation…`);  // the previous action's result goes
    const query = new URLSearchParams({ dag_id: panel.dataset.dag, run_id: panel.dataset.run, action: button.dataset.action });
    if (button.hasAttribute("data-selected")) new Set(picked()).forEach((hash) => query.append("selected", hash));
    const planned = await fetch(`${base}/plan?${query}`, { credentials: "same-origin" });
    const plan = await planned.json().catch(() => ({}));
    if (!planned.ok) return show(plan.detail || `could not plan the action (${planned.status})`, true);
    if (!(await confirmed(plan.message))) return;
    const answer = await fetch(plan.trigger_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(plan.body),
    });
    const run = await answer.json().catch(() => ({}));
    if (!answer.ok) return show(`Airflow refused the run (${answer.status}): ${JSON.stringify(run.detail || run)}`, true);
    result.replaceChildren("Started ");
    const link = document.createElement("a");
    link.href = `${base}/run?${new URLSearchParams({ dag_id: run.dag_id, run_id: run.dag_run_id })}`;
    link.textContent = run.dag_run_id;
    link.className = "new-run";
    result.append(link, ` (${run.state}).`);
    result.classList.remove("error");
  };
});
