// LoRA Trainer — tag editor keyboard: Delete removes the ticked tags, ←/→ (or PageUp/PageDown) go to the
// previous/next image, Ctrl+Z undoes, Ctrl+Y or Ctrl+Shift+Z redoes.
// Keys act only while the editor is visible and the focus is not in a text field, so typing a caption and
// the WebUI's own shortcuts elsewhere are left alone. Each key clicks the editor's button of the same job,
// so the keyboard does exactly what the mouse does. Globals are prefixed lora_trainer_ (shared namespace).

function lora_trainer_tags_root() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

function lora_trainer_tags_visible() {
    var editor = lora_trainer_tags_root().querySelector("#lt-tags-editor");
    return !!(editor && editor.offsetParent !== null);
}

function lora_trainer_tags_typing(target) {
    if (!target) return false;
    if (target.isContentEditable) return true;
    var tag = (target.tagName || "").toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    if (tag !== "input") return false;
    var type = (target.getAttribute("type") || "text").toLowerCase();
    return ["checkbox", "radio", "button", "submit", "range"].indexOf(type) < 0;
}

function lora_trainer_tags_click(id) {
    var el = lora_trainer_tags_root().querySelector("#" + id);
    if (el && el.tagName.toLowerCase() !== "button") el = el.querySelector("button") || el;
    if (!el) return false;
    el.click();
    return true;
}

function lora_trainer_tags_action(event) {
    var ctrl = event.ctrlKey || event.metaKey;
    var key = event.key;
    if (ctrl && !event.altKey) {
        if ((key === "z" || key === "Z") && !event.shiftKey) return "lt-tags-undo";
        if (key === "y" || key === "Y" || ((key === "z" || key === "Z") && event.shiftKey)) return "lt-tags-redo";
        return null;
    }
    if (event.altKey || event.shiftKey) return null;
    if (key === "Delete") return "lt-tags-delete";
    if (key === "ArrowRight" || key === "PageDown") return "lt-tags-next";
    if (key === "ArrowLeft" || key === "PageUp") return "lt-tags-prev";
    return null;
}

function lora_trainer_tags_keydown(event) {
    if (event.defaultPrevented || !lora_trainer_tags_visible() || lora_trainer_tags_typing(event.target)) return;
    var id = lora_trainer_tags_action(event);
    if (id && lora_trainer_tags_click(id)) event.preventDefault();
}

document.addEventListener("keydown", lora_trainer_tags_keydown);
