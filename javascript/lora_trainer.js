// LoRA Trainer — tooltips: every option of the tab gets a one-line title from its config field's help.
// The tab puts {elem_id: text} as JSON in the hidden #lt-tooltip-data element (translated server-side);
// this script copies each text into the title attribute of the element with that id, again whenever
// gradio re-renders part of the page. Works in the WebUI (which loads javascript/*.js by itself) and in
// the standalone `ui` page (which injects this file). Globals are prefixed lora_trainer_.

function lora_trainer_root() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

var lora_trainer_tip_cache = {raw: null, tips: {}};

function lora_trainer_tips() {
    var holder = lora_trainer_root().querySelector("#lt-tooltip-data");
    if (!holder) return {};
    var raw = holder.getAttribute("data-tips") || "{}";
    if (raw !== lora_trainer_tip_cache.raw) {
        try {
            lora_trainer_tip_cache = {raw: raw, tips: JSON.parse(raw)};
        } catch (e) {
            lora_trainer_tip_cache = {raw: raw, tips: {}};
        }
    }
    return lora_trainer_tip_cache.tips;
}

function lora_trainer_apply_tips() {
    var root = lora_trainer_root();
    var tips = lora_trainer_tips();
    var done = 0;
    Object.keys(tips).forEach(function(id) {
        var el = root.querySelector("#" + (window.CSS && CSS.escape ? CSS.escape(id) : id));
        if (!el || !tips[id]) return;
        if (el.getAttribute("title") !== tips[id]) el.setAttribute("title", tips[id]);
        done += 1;
    });
    return done;
}

var lora_trainer_tip_timer = null;

function lora_trainer_schedule_tips() {
    if (lora_trainer_tip_timer) return;
    lora_trainer_tip_timer = setTimeout(function() {
        lora_trainer_tip_timer = null;
        lora_trainer_apply_tips();
    }, 150);
}

if (typeof onUiUpdate === "function") {
    onUiUpdate(lora_trainer_schedule_tips);          // the WebUI's own hook (script.js)
} else {
    new MutationObserver(lora_trainer_schedule_tips).observe(document.body || document.documentElement,
                                                             {childList: true, subtree: true});
}
lora_trainer_schedule_tips();
