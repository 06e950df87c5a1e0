// LoRA Trainer — the project list stays current: projects made elsewhere (over the API, in another browser
// tab) appear without pressing ↻. The tab's load event refreshes the list when the page loads; on a page
// that is already open, this clicks ↻ (#lt-project-refresh) when the UI is up and whenever the WebUI's
// top-level tab changes to ours (script.js: onUiLoaded, onUiTabChange). The standalone page has neither
// hook and relies on the load event. Globals are prefixed lora_trainer_ (shared namespace).

function lora_trainer_projects_refresh() {
    var root = typeof gradioApp === "function" ? gradioApp() : document;
    var el = root.querySelector("#lt-project-refresh");
    if (el && el.tagName.toLowerCase() !== "button") el = el.querySelector("button") || el;
    if (!el || el.offsetParent === null) return false;   // our tab is not the one on screen
    el.click();
    return true;
}

if (typeof onUiLoaded === "function") onUiLoaded(lora_trainer_projects_refresh);
if (typeof onUiTabChange === "function") onUiTabChange(lora_trainer_projects_refresh);
