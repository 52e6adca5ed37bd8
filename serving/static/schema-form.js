// A form built from a JSON schema (a Prefect deployment's parameter schema), validated in the browser.
//
// Checked here: required, type, enum, minimum/maximum (and exclusive), minLength/maxLength, pattern, array
// items; other keywords (multipleOf, format, ...) are left to the API, whose 422 reason the caller shows.
import { h } from "./ui.js";

let counter = 0;

function resolve(schema, root) {
  let node = schema || {};
  for (let depth = 0; node.$ref && depth < 10; depth++) {
    const name = node.$ref.split("/").pop();
    const defs = root.definitions || root.$defs || {};
    node = { ...defs[name], ...Object.fromEntries(Object.entries(node).filter(([k]) => k !== "$ref")) };
  }
  const choices = node.anyOf || node.oneOf;
  if (choices) {
    const real = choices.filter((c) => c.type !== "null");
    if (real.length === 1) {
      const { anyOf, oneOf, ...rest } = node;
      return { ...resolve(real[0], root), ...rest, nullable: real.length < choices.length };
    }
  }
  if (node.allOf && node.allOf.length === 1) {
    const { allOf, ...rest } = node;
    return { ...resolve(allOf[0], root), ...rest };
  }
  return node;
}

function labelOf(key, schema) {
  const title = schema.title && schema.title !== key ? schema.title : key.replaceAll("_", " ");
  return title.charAt(0).toUpperCase() + title.slice(1);
}

function kindOf(schema) {
  if (schema.enum) return "enum";
  if (schema.type === "object" && schema.properties) return "object";
  if (schema.type === "array" && ["string", "integer", "number"].includes((schema.items || {}).type)) return "list";
  if (["string", "integer", "number", "boolean"].includes(schema.type)) return schema.type;
  return "json";
}

function inputFor(kind, schema, id, initial) {
  if (kind === "enum") {
    const options = schema.enum.map((value) => h("option", { value: JSON.stringify(value), selected: value === initial }, String(value)));
    if (schema.nullable) options.unshift(h("option", { value: "", selected: initial === null || initial === undefined }, "(none)"));
    return h("select", { id }, options);
  }
  if (kind === "boolean") return h("input", { id, type: "checkbox", checked: Boolean(initial) });
  if (kind === "integer" || kind === "number") {
    return h("input", { id, type: "number", step: kind === "integer" ? "1" : "any", inputmode: kind === "integer" ? "numeric" : "decimal", value: initial ?? "" });
  }
  if (kind === "list") return h("input", { id, value: Array.isArray(initial) ? initial.join(", ") : "" });
  if (kind === "json") {
    return h("textarea", { id, rows: "2", value: initial === undefined ? "" : JSON.stringify(initial) });
  }
  return h("input", { id, value: initial ?? "" });
}

function matches(pattern, value) {
  try {
    return new RegExp(pattern, "u").test(value);
  } catch {
    return true; // a pattern this browser cannot compile is left to the API
  }
}

/** Messages for a scalar `value` against `schema` (empty when valid). */
export function check(value, schema) {
  const problems = [];
  const type = schema.type;
  if (type === "integer" && !Number.isInteger(value)) return ["Enter a whole number."];
  if (type === "number" && (typeof value !== "number" || !Number.isFinite(value))) return ["Enter a number."];
  if (type === "string" && typeof value !== "string") return ["Enter text."];
  if (schema.enum && !schema.enum.includes(value)) problems.push(`Choose one of: ${schema.enum.join(", ")}.`);
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`Must be at least ${schema.minimum}.`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`Must be at most ${schema.maximum}.`);
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) problems.push(`Must be greater than ${schema.exclusiveMinimum}.`);
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) problems.push(`Must be less than ${schema.exclusiveMaximum}.`);
  }
  if (typeof value === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) problems.push(`Must be at least ${schema.minLength} characters.`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) problems.push(`Must be at most ${schema.maxLength} characters.`);
    if (schema.pattern && !matches(schema.pattern, value)) problems.push(`Must match the pattern ${schema.pattern}.`);
  }
  return problems;
}

class Field {
  constructor(key, schema, root, initial, required, path) {
    this.key = key;
    this.path = path;
    this.schema = resolve(schema, root);
    this.label = labelOf(key, schema.title ? schema : {}); // a $ref'd definition's title names the type, not the field
    this.required = required;
    this.kind = kindOf(this.schema);
    const start = initial !== undefined ? initial : this.schema.default;
    const id = `field-${++counter}`;
    if (this.kind === "object") {
      const needed = new Set(this.schema.required || []);
      this.children = Object.entries(this.schema.properties).map(([name, child]) =>
        new Field(name, child, root, (start || {})[name], needed.has(name), [...path, name]));
      this.element = h("fieldset", { class: "schema-group" },
        h("legend", {}, this.label),
        this.schema.description ? h("p", { class: "hint" }, this.schema.description.split("\n")[0]) : null,
        this.children.map((child) => child.element));
      return;
    }
    this.input = inputFor(this.kind, this.schema, id, start);
    this.input.name = path.join(".");
    this.error = h("p", { class: "field-error", id: `${id}-error` });
    const hintText = [this.schema.description, this.kind === "list" ? "Comma-separated." : "", this.kind === "json" ? "JSON." : ""].filter(Boolean).join(" ");
    const hint = hintText ? h("p", { class: "hint", id: `${id}-hint` }, hintText) : null;
    this.input.setAttribute("aria-describedby", [hint && `${id}-hint`, `${id}-error`].filter(Boolean).join(" "));
    if (required) this.input.setAttribute("aria-required", "true");
    const label = h("label", { for: id }, this.label, required ? h("span", { class: "required" }, " (required)") : null);
    this.element = h("div", { class: `field field-${this.kind}` },
      this.kind === "boolean" ? [this.input, " ", label] : [label, this.input], hint, this.error);
  }

  /** {value, present, problems} of this field as the user left it. */
  read() {
    if (this.kind === "boolean") return { value: this.input.checked, present: true, problems: [] };
    const numeric = this.kind === "integer" || this.kind === "number";
    if (numeric && this.input.validity.badInput) return { present: false, problems: ["Enter a number."] };
    const raw = this.input.value.trim();
    if (raw === "") {
      if (this.schema.nullable) return { value: null, present: true, problems: [] };
      if (this.required) return { present: false, problems: ["Required."] };
      return { present: false, problems: [] }; // left out: the flow's default applies
    }
    if (numeric) return this.checked(Number(raw));
    if (this.kind === "enum") return this.checked(JSON.parse(raw));
    if (this.kind === "list") {
      const itemType = this.schema.items.type;
      const items = raw.split(",").map((part) => part.trim()).filter(Boolean)
        .map((part) => (itemType === "string" ? part : Number(part)));
      const problems = items.flatMap((item) => check(item, this.schema.items).map((p) => `${item}: ${p}`));
      return { value: items, present: true, problems };
    }
    if (this.kind === "json") {
      try {
        return { value: JSON.parse(raw), present: true, problems: [] };
      } catch {
        return { present: false, problems: ["Enter valid JSON."] };
      }
    }
    return this.checked(this.input.value);
  }

  checked(value) {
    return { value, present: true, problems: check(value, this.schema) };
  }

  /** Show `problems` next to the field, or clear them. */
  mark(problems) {
    this.error.textContent = problems.join(" ");
    if (problems.length) this.input.setAttribute("aria-invalid", "true");
    else this.input.removeAttribute("aria-invalid");
  }

  walk(visit) {
    if (this.children) this.children.forEach((child) => child.walk(visit));
    else visit(this);
  }

  collect(invalid) {
    if (this.children) {
      const value = {};
      for (const child of this.children) {
        const found = child.collect(invalid);
        if (found.present) value[child.key] = found.value;
      }
      return { value, present: true };
    }
    const { value, present, problems } = this.read();
    this.mark(problems);
    if (problems.length) invalid.push(this);
    return { value, present };
  }
}

/** Render `schema`'s properties into `container` with `values` filled in; returns the form's API. */
export function schemaForm(container, schema, values = {}) {
  const root = schema || {};
  const needed = new Set(root.required || []);
  const fields = Object.entries(root.properties || {})
    .sort(([, a], [, b]) => (a.position ?? 0) - (b.position ?? 0))
    .map(([key, child]) => new Field(key, child, root, values[key], needed.has(key), [key]));
  container.replaceChildren(...fields.map((field) => field.element));
  return {
    /** {parameters, invalid}: the values to send, and the fields with a problem (shown next to them). */
    read() {
      const invalid = [];
      const parameters = {};
      for (const field of fields) {
        const found = field.collect(invalid);
        if (found.present) parameters[field.key] = found.value;
      }
      return { parameters, invalid };
    },
    /** Show a problem the API found next to its field (path like "params.forest.n_estimators"). */
    markPath(path, message) {
      let hit = null;
      for (const field of fields) field.walk((leaf) => { if (leaf.path.join(".") === path) hit = leaf; });
      if (hit) {
        hit.mark([message]);
        hit.input.focus();
      }
      return Boolean(hit);
    },
    clear() {
      for (const field of fields) field.walk((leaf) => leaf.mark([]));
    },
  };
}
