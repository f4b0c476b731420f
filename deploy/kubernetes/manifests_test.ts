/**
 * The Kubernetes manifests of deploy/kubernetes/: every document of every YAML file validated
 * against the Kubernetes schema (kubernetes-models, see deps/kubernetes.ts), strictly — a field
 * the schema does not have is an error, as the API server's strict field validation makes it —
 * and the invariants between the files that no schema sees: shard counts, images, ports, Secret
 * keys, claims, and the tools' own options.
 */
import assert from "node:assert/strict";
import {
  runValidateFunc,
  validateDeployment,
  type ValidateFunc,
  validateJob,
  validatePersistentVolumeClaim,
  validateSecret,
  validateService,
} from "../../deps/kubernetes.ts";
import { parseAllDocuments } from "../../deps/yaml.ts";
import { SPEC as REPRODUCE_SPEC } from "../../tools/reproduce.ts";
import { SPEC as SERVE_SPEC } from "../../tools/serve.ts";

const DIR = new URL("./", import.meta.url);

// deno-lint-ignore no-explicit-any
type Doc = Record<string, any>;

/** Schema validators by `apiVersion/kind`, for the kinds the manifests use. */
const SCHEMAS: Record<string, ValidateFunc<unknown>> = {
  "batch/v1/Job": validateJob as ValidateFunc<unknown>,
  "apps/v1/Deployment": validateDeployment as ValidateFunc<unknown>,
  "v1/Service": validateService as ValidateFunc<unknown>,
  "v1/Secret": validateSecret as ValidateFunc<unknown>,
  "v1/PersistentVolumeClaim": validatePersistentVolumeClaim as ValidateFunc<unknown>,
};

/** The documents of a YAML text (empty ones dropped); a YAML error or warning throws. */
function parseYaml(text: string, file: string): Doc[] {
  const docs: Doc[] = [];
  for (const d of parseAllDocuments(text, { uniqueKeys: true, strict: true })) {
    const problems = [...d.errors, ...d.warnings];
    if (problems.length) throw new Error(`${file}: ${problems.map((p) => p.message).join("; ")}`);
    const value = d.toJS();
    if (value !== null && value !== undefined) docs.push(value);
  }
  return docs;
}

/**
 * The fields of `doc` that `validate` never read: the generated validators read each property
 * the schema declares (and every key of a map), so a key left unread is not in the schema.
 * Objects under an unknown field are not looked into (their parent is already reported).
 */
function unknownFields(validate: ValidateFunc<unknown>, doc: unknown): string[] {
  const read = new WeakMap<object, Set<string>>();
  const proxies = new WeakMap<object, object>();
  const wrap = (value: unknown): unknown => {
    if (value === null || typeof value !== "object") return value;
    let proxy = proxies.get(value);
    if (!proxy) {
      const keys = new Set<string>();
      read.set(value, keys);
      proxy = new Proxy(value, {
        get(target, key, receiver) {
          if (typeof key === "string") keys.add(key);
          return wrap(Reflect.get(target, key, receiver));
        },
      });
      proxies.set(value, proxy);
    }
    return proxy;
  };
  validate(wrap(doc));
  const unknown: string[] = [];
  const walk = (value: unknown, path: string): void => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${path}/${i}`));
    else if (value !== null && typeof value === "object") {
      const keys = read.get(value);
      if (!keys) return;
      for (const [k, v] of Object.entries(value)) {
        if (keys.has(k)) walk(v, `${path}/${k}`);
        else unknown.push(`${path}/${k} is not in the ${(doc as Doc).kind} schema`);
      }
    }
  };
  walk(doc, "data");
  return unknown;
}

/** Schema errors of one document ("data/spec/x must be integer", unknown fields), or []. */
function validateManifest(doc: Doc): string[] {
  const validate = SCHEMAS[`${doc.apiVersion}/${doc.kind}`];
  if (!validate) return [`no schema for apiVersion ${doc.apiVersion}, kind ${doc.kind}`];
  const errors: string[] = [];
  try {
    runValidateFunc(validate, doc);
  } catch (e) {
    errors.push((e as Error).message);
  }
  return [...errors, ...unknownFields(validate, doc)];
}

/** Every manifest: file name → its documents. */
async function loadAll(): Promise<Map<string, Doc[]>> {
  const files = new Map<string, Doc[]>();
  for await (const e of Deno.readDir(DIR)) {
    if (!e.isFile || !/\.ya?ml$/.test(e.name)) continue;
    files.set(e.name, parseYaml(await Deno.readTextFile(new URL(e.name, DIR)), e.name));
  }
  return files;
}

/** The one document of `kind` named `name` among all files. */
function find(all: Map<string, Doc[]>, kind: string, name?: string): Doc {
  const found = [...all.values()].flat().filter((d) =>
    d.kind === kind && (name === undefined || d.metadata?.name === name)
  );
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ""} expected`);
  return found[0];
}

/** The value after `--option` in an argument list. */
function optionValue(args: string[], option: string): string | undefined {
  const i = args.indexOf(`--${option}`);
  return i < 0 ? undefined : args[i + 1];
}

/** Every option of `args` is one the tool's spec has (a renamed option fails here). */
function assertOptions(args: string[], options: Record<string, { type: string }>, task: string) {
  for (let i = 1; i < args.length; i++) {
    if (!args[i].startsWith("--")) continue;
    const name = args[i].slice(2);
    assert.ok(name in options, `${task}: --${name} is not an option of deno task ${task}`);
    if (options[name].type === "string") i++;
  }
}

Deno.test("manifests: every document of every YAML file is valid against the Kubernetes schema", async () => {
  const all = await loadAll();
  assert.deepEqual([...all.keys()].sort(), [
    "pvc.yaml",
    "report-server.yaml",
    "reproduce-job.yaml",
    "secret.example.yaml",
  ]);
  const kinds: string[] = [];
  for (const [file, docs] of all) {
    for (const doc of docs) {
      kinds.push(doc.kind);
      assert.deepEqual(validateManifest(doc), [], `${file}: ${doc.kind} ${doc.metadata?.name}`);
    }
  }
  assert.deepEqual(kinds.sort(), [
    "Deployment",
    "Job",
    "PersistentVolumeClaim",
    "PersistentVolumeClaim",
    "PersistentVolumeClaim",
    "Secret",
    "Service",
  ]);
});

Deno.test("manifests: a misspelt field, a wrong type or a bad enum value fails validation", async () => {
  const job = find(await loadAll(), "Job");
  const broken = (edit: (d: Doc) => void): string[] => {
    const copy = structuredClone(job);
    edit(copy);
    return validateManifest(copy);
  };
  // The negative control: the unchanged Job passes, each broken copy fails and is named.
  assert.deepEqual(broken(() => {}), []);
  assert.deepEqual(
    broken((d) => {
      d.spec.completionsMode = d.spec.completionMode;
      delete d.spec.completionMode;
    }),
    ["data/spec/completionsMode is not in the Job schema"],
  );
  assert.deepEqual(
    broken((d) => {
      const c = d.spec.template.spec.containers[0];
      c.volumeMount = c.volumeMounts;
      delete c.volumeMounts;
    }),
    ["data/spec/template/spec/containers/0/volumeMount is not in the Job schema"],
  );
  assert.deepEqual(broken((d) => d.spec.completions = "4"), [
    "data/spec/completions must be integer",
  ]);
  const restart = broken((d) => d.spec.template.spec.restartPolicy = "Sometimes");
  assert.equal(restart.length, 1);
  assert.match(restart[0], /^data\/spec\/template\/spec\/restartPolicy must be equal to one of/);
  assert.deepEqual(broken((d) => delete d.spec.template.spec.containers[0].name), [
    "data/spec/template/spec/containers/0 must have required property name",
  ]);
  // Map keys (labels) are free; a kind without a schema here is named.
  assert.deepEqual(broken((d) => d.metadata.labels["example.com/any-key"] = "x"), []);
  assert.deepEqual(validateManifest({ apiVersion: "v1", kind: "Pdo" }), [
    "no schema for apiVersion v1, kind Pdo",
  ]);
});

Deno.test("manifests: shards, images, ports, Secret keys, claims and options agree across files", async () => {
  const all = await loadAll();
  const job = find(all, "Job");
  const deployment = find(all, "Deployment");
  const service = find(all, "Service");
  const secret = find(all, "Secret");
  const jobPod = job.spec.template.spec;
  const serverPod = deployment.spec.template.spec;
  const reproduce = jobPod.containers.find((c: Doc) => c.name === "reproduce");
  const serve = serverPod.containers[0];
  const env = (c: Doc, name: string) => c.env?.find((e: Doc) => e.name === name);

  // Shards: an Indexed Job whose completions is MOKA_SHARDS, one GPU per pod, retried per index.
  assert.equal(job.spec.completionMode, "Indexed");
  assert.equal(env(reproduce, "MOKA_SHARDS")?.value, String(job.spec.completions));
  assert.ok(job.spec.parallelism >= 1 && job.spec.parallelism <= job.spec.completions);
  assert.ok(job.spec.backoffLimitPerIndex >= 1);
  assert.equal(job.spec.podReplacementPolicy, "Failed");
  assert.equal(jobPod.restartPolicy, "Never");
  assert.equal(String(reproduce.resources.limits["nvidia.com/gpu"]), "1");

  // The tools' own options, and the values the deployment relies on.
  const jobArgs: string[] = reproduce.args;
  const serveArgs: string[] = serve.args;
  assert.equal(jobArgs[0], "reproduce");
  assert.equal(serveArgs[0], "serve");
  assertOptions(jobArgs, REPRODUCE_SPEC.options, "reproduce");
  assertOptions(serveArgs, SERVE_SPEC.options, "serve");
  assert.equal(optionValue(jobArgs, "shard"), "auto");
  assert.equal(optionValue(serveArgs, "hostname"), "0.0.0.0");
  assert.match(optionValue(serveArgs, "kv") ?? "", /^\/data\//);

  // One image everywhere (init containers too).
  const images = new Set(
    [jobPod, serverPod].flatMap((p) => [...(p.initContainers ?? []), ...p.containers])
      .map((c: Doc) => c.image),
  );
  assert.equal(images.size, 1, `one image expected, found ${[...images].join(", ")}`);

  // Ports: --port, the container port the Service targets, the Service port, --publish's URL.
  const port = Number(optionValue(serveArgs, "port"));
  const http = serve.ports.find((p: Doc) => p.name === service.spec.ports[0].targetPort);
  assert.equal(http?.containerPort, port, "the Service targets the server's --port");
  assert.equal(service.spec.ports[0].port, port);
  assert.equal(
    optionValue(jobArgs, "publish"),
    `http://${service.metadata.name}:${service.spec.ports[0].port}`,
  );
  for (const probe of [serve.readinessProbe, serve.livenessProbe]) {
    assert.equal(probe.httpGet.path, "/health");
    assert.equal(probe.httpGet.port, http.name);
  }
  assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);

  // Single writer: one replica, never two pods at once.
  assert.equal(deployment.spec.replicas, 1);
  assert.equal(deployment.spec.strategy.type, "Recreate");

  // The token: both read MOKA_PUBLISH_TOKEN from the Secret's key.
  const secretKeys = Object.keys({ ...secret.data, ...secret.stringData });
  for (const c of [reproduce, serve]) {
    const ref = env(c, "MOKA_PUBLISH_TOKEN")?.valueFrom?.secretKeyRef;
    assert.equal(ref?.name, secret.metadata.name, `${c.name}: the Secret's name`);
    assert.ok(secretKeys.includes(ref.key), `${c.name}: key ${ref?.key} of the Secret`);
  }

  // Claims: each one used is in pvc.yaml with the access its use needs; inputs read-only.
  const claims = new Map(
    all.get("pvc.yaml")!.map((d) => [d.metadata.name, d.spec.accessModes as string[]]),
  );
  for (const pod of [jobPod, serverPod]) {
    for (const v of pod.volumes.filter((v: Doc) => v.persistentVolumeClaim)) {
      assert.ok(claims.has(v.persistentVolumeClaim.claimName), v.persistentVolumeClaim.claimName);
    }
  }
  const claimOf = (pod: Doc, mountPath: string, c: Doc) => {
    const mount = c.volumeMounts.find((m: Doc) => m.mountPath === mountPath);
    const volume = pod.volumes.find((v: Doc) => v.name === mount.name);
    return { mount, claim: volume.persistentVolumeClaim };
  };
  for (const path of ["/models", "/data"]) {
    const { mount, claim } = claimOf(jobPod, path, reproduce);
    assert.equal(mount.readOnly, true, `${path} mounted read-only`);
    assert.equal(claim.readOnly, true);
    assert.equal(optionValue(jobArgs, path.slice(1)) ?? path, path);
  }
  const out = claimOf(jobPod, "/out", reproduce);
  assert.ok(claims.get(out.claim.claimName)!.includes("ReadWriteMany"), "out: any node's pod");
  assert.equal(optionValue(jobArgs, "out"), "/out/shard-$(JOB_COMPLETION_INDEX)");
  const kv = claimOf(serverPod, "/data", serve);
  assert.ok(claims.get(kv.claim.claimName)!.includes("ReadWriteOnce"));

  // The image's user is the pods' runAsUser.
  const dockerfile = await Deno.readTextFile(new URL("../Dockerfile", import.meta.url));
  const user = dockerfile.match(/^USER (\d+)/m)?.[1];
  for (const pod of [jobPod, serverPod]) {
    assert.equal(String(pod.securityContext.runAsUser), user);
    assert.equal(pod.securityContext.runAsNonRoot, true);
  }
  assert.match(dockerfile, /^ENTRYPOINT \["deno", "task"\]$/m);
});
