/**
 * Job templates and schedules: `client.templates` and `client.schedules`,
 * as the Python client's (docs/workflows.md says how templates are filled
 * and when schedules tick).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { type Timestamp, durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { UnaryCaller } from "./connection.js";
import { required } from "./errors.js";
import {
  CatchUpPolicy,
  OverlapPolicy,
  type Schedule as ScheduleMessage,
  ScheduleSchema,
  type ScheduleService,
  TemplateRefSchema,
} from "./gen/zbrain/v1/schedule_pb.js";
import {
  ParameterSchema,
  ParameterType,
  type Template as TemplateMessage,
  type TemplateService,
} from "./gen/zbrain/v1/template_pb.js";
import { type Job, durationMs, jobFrom } from "./models.js";
import { type JobSpec, jobSpec, jobSpecFrom } from "./specs.js";

export { CatchUpPolicy, OverlapPolicy, ParameterType };

/** Schedules and templates are read a page of this many at a time. */
const PAGE_SIZE = 200;

/** One `{{ name }}` of a template: its type, whether a submit must give it, and its value otherwise. */
export interface TemplateParameter {
  readonly name: string;
  /** STRING when unset. */
  readonly type?: ParameterType;
  readonly required?: boolean;
  /** Any JSON value; none when unset. */
  readonly default?: unknown;
  readonly description?: string;
}

/** One version of a named job template. */
export interface Template {
  readonly orgId: string;
  readonly name: string;
  readonly version: number;
  readonly job: JobSpec;
  readonly parameters: readonly TemplateParameter[];
  readonly description: string;
  readonly createTime: Date | undefined;
}

export interface TemplateOptions {
  readonly org?: string;
  /** Each `{{ name }}` the job uses. */
  readonly parameters?: readonly TemplateParameter[];
  readonly description?: string;
}

export interface TemplateSubmitOptions {
  readonly org?: string;
  /** The version to submit; the latest when unset. */
  readonly version?: number;
  /** An idempotency key, as `submit`'s. */
  readonly requestId?: string;
}

/** Named, versioned job templates of an organisation; reached as `client.templates`. */
export class Templates {
  /** @internal */
  constructor(
    private readonly service: Client<typeof TemplateService>,
    private readonly unary: UnaryCaller,
  ) {}

  /**
   * Store a new version of template `name` (version 1 if it is new).
   * `{{ name }}` in the job's arguments, environment values and input strings
   * are parameters, each declared in `parameters`.
   */
  async create(name: string, job: JobSpec, options: TemplateOptions = {}): Promise<Template> {
    const template = {
      orgId: options.org ?? "",
      name,
      job: jobSpec(job),
      description: options.description ?? "",
      parameters: (options.parameters ?? []).map((parameter) =>
        create(ParameterSchema, {
          name: parameter.name,
          type: parameter.type ?? ParameterType.STRING,
          required: parameter.required ?? false,
          defaultJson: parameter.default === undefined ? "" : JSON.stringify(parameter.default),
          description: parameter.description ?? "",
        }),
      ),
    };
    const response = await this.unary((options) => this.service.createTemplate({ template }, options));
    return templateFrom(required(response.template, "CreateTemplate", "template"));
  }

  /** One version of a template (the latest unless `version`). */
  async get(name: string, options: { readonly org?: string; readonly version?: number } = {}): Promise<Template> {
    const request = { orgId: options.org ?? "", name, version: options.version ?? 0 };
    const response = await this.unary((call) => this.service.getTemplate(request, call));
    return templateFrom(required(response.template, "GetTemplate", "template"));
  }

  /** The latest version of every template, by name. */
  async *list(options: { readonly org?: string } = {}): AsyncGenerator<Template, void, undefined> {
    const request = { orgId: options.org ?? "", pageSize: PAGE_SIZE, pageToken: "" };
    for (;;) {
      const response = await this.unary((call) => this.service.listTemplates(request, call));
      yield* response.templates.map(templateFrom);
      if (!response.nextPageToken) {
        return;
      }
      request.pageToken = response.nextPageToken;
    }
  }

  /** Delete every version of a template; resolves to how many there were. */
  async delete(name: string, options: { readonly org?: string } = {}): Promise<number> {
    const request = { orgId: options.org ?? "", name };
    const response = await this.unary((call) => this.service.deleteTemplate(request, call));
    return response.deletedVersions;
  }

  /** Submit a job from a template; `params` are values (text as it is, others as JSON). */
  async submit(
    name: string,
    params: Readonly<Record<string, unknown>> = {},
    options: TemplateSubmitOptions = {},
  ): Promise<Job> {
    const request = {
      orgId: options.org ?? "",
      name,
      version: options.version ?? 0,
      parameters: paramTexts(params),
      requestId: options.requestId ?? "",
    };
    const response = await this.unary((call) => this.service.submitTemplate(request, call));
    return jobFrom(required(response.job, "SubmitTemplate"));
  }
}

/** When a schedule ticks and what each tick submits: `cron` or `everyMs`, and `job` or `template`. */
export interface ScheduleOptions {
  readonly org?: string;
  /** A 5-field cron expression (minute hour day month weekday), in `timeZone`. */
  readonly cron?: string;
  /** An IANA time zone such as Europe/Paris; UTC when unset. */
  readonly timeZone?: string;
  /** Instead of `cron`: every this long (at least one second). */
  readonly everyMs?: number;
  /** The job each tick submits ... */
  readonly job?: JobSpec;
  /** ... or the template it submits, its latest version unless `templateVersion`. */
  readonly template?: string;
  readonly templateVersion?: number;
  /** The template's parameters (text as it is, others as JSON). */
  readonly params?: Readonly<Record<string, unknown>>;
  /** What a tick does while the last tick's job still runs; SKIP when unset. */
  readonly overlap?: OverlapPolicy;
  /** What happens to ticks missed while no server ran; SKIP when unset. */
  readonly catchUp?: CatchUpPolicy;
  /** Create it paused. */
  readonly paused?: boolean;
}

/** A schedule: when it ticks, what each tick submits, and its policies. */
export interface Schedule {
  readonly id: string;
  readonly orgId: string;
  /** A 5-field cron expression in `timeZone`, or "". */
  readonly cron: string;
  readonly timeZone: string;
  /** Or a fixed interval; undefined with `cron`. */
  readonly everyMs: number | undefined;
  readonly job: JobSpec | undefined;
  readonly template:
    { readonly name: string; readonly version: number; readonly params: Readonly<Record<string, unknown>> } | undefined;
  readonly overlap: OverlapPolicy;
  readonly catchUp: CatchUpPolicy;
  readonly paused: boolean;
  readonly nextFireTime: Date | undefined;
  readonly lastFireTime: Date | undefined;
  /** The job the last tick submitted. */
  readonly lastJobId: string;
  readonly createTime: Date | undefined;
  readonly updateTime: Date | undefined;
  /** The next fire times, at most five (from `create` and `get` only). */
  readonly upcoming: readonly Date[];
}

type OrgOption = { readonly org?: string };

/** Schedules of an organisation: a job (or a template) at every tick; reached as `client.schedules`. */
export class Schedules {
  /** @internal */
  constructor(
    private readonly service: Client<typeof ScheduleService>,
    private readonly unary: UnaryCaller,
  ) {}

  /** Create schedule `id`. */
  async create(id: string, options: ScheduleOptions): Promise<Schedule> {
    const schedule = scheduleMessage(id, options);
    const response = await this.unary((call) => this.service.createSchedule({ schedule }, call));
    return scheduleFrom(required(response.schedule, "CreateSchedule", "schedule"), response.upcoming);
  }

  /** Replace a schedule's timing, job and policies (as `create` takes them); its next tick is computed anew. */
  async update(id: string, options: ScheduleOptions): Promise<Schedule> {
    const schedule = scheduleMessage(id, options);
    const response = await this.unary((call) => this.service.updateSchedule({ schedule }, call));
    return scheduleFrom(required(response.schedule, "UpdateSchedule", "schedule"));
  }

  /** A schedule, with its next fire times (`upcoming`). */
  async get(id: string, options: OrgOption = {}): Promise<Schedule> {
    const response = await this.unary((call) => this.service.getSchedule(scheduleRef(id, options), call));
    return scheduleFrom(required(response.schedule, "GetSchedule", "schedule"), response.upcoming);
  }

  /** Every schedule of the organisation, by id. */
  async *list(options: OrgOption = {}): AsyncGenerator<Schedule, void, undefined> {
    const request = { orgId: options.org ?? "", pageSize: PAGE_SIZE, pageToken: "" };
    for (;;) {
      const response = await this.unary((call) => this.service.listSchedules(request, call));
      yield* response.schedules.map((message) => scheduleFrom(message));
      if (!response.nextPageToken) {
        return;
      }
      request.pageToken = response.nextPageToken;
    }
  }

  /** Delete a schedule; the jobs it submitted stay. */
  async delete(id: string, options: OrgOption = {}): Promise<void> {
    await this.unary((call) => this.service.deleteSchedule(scheduleRef(id, options), call));
  }

  /** Stop a schedule's ticks until it is resumed. */
  async pause(id: string, options: OrgOption = {}): Promise<Schedule> {
    const response = await this.unary((call) => this.service.pauseSchedule(scheduleRef(id, options), call));
    return scheduleFrom(required(response.schedule, "PauseSchedule", "schedule"));
  }

  /** Tick again, from the next tick after now. */
  async resume(id: string, options: OrgOption = {}): Promise<Schedule> {
    const response = await this.unary((call) => this.service.resumeSchedule(scheduleRef(id, options), call));
    return scheduleFrom(required(response.schedule, "ResumeSchedule", "schedule"));
  }

  /** Submit the schedule's job now, outside its ticks. */
  async trigger(id: string, options: OrgOption = {}): Promise<Job> {
    const response = await this.unary((call) => this.service.triggerSchedule(scheduleRef(id, options), call));
    return jobFrom(required(response.job, "TriggerSchedule"));
  }
}

function scheduleRef(id: string, options: OrgOption): { orgId: string; scheduleId: string } {
  return { orgId: options.org ?? "", scheduleId: id };
}

function scheduleMessage(id: string, options: ScheduleOptions): ScheduleMessage {
  return create(ScheduleSchema, {
    id,
    orgId: options.org ?? "",
    cron: options.cron ?? "",
    timeZone: options.timeZone ?? "",
    overlap: options.overlap ?? OverlapPolicy.SKIP,
    catchUp: options.catchUp ?? CatchUpPolicy.SKIP,
    paused: options.paused ?? false,
    ...(options.everyMs === undefined ? {} : { interval: durationFromMs(options.everyMs) }),
    ...(options.job === undefined ? {} : { job: jobSpec(options.job) }),
    ...(options.template === undefined
      ? {}
      : {
          template: create(TemplateRefSchema, {
            name: options.template,
            version: options.templateVersion ?? 0,
            parameters: paramTexts(options.params ?? {}),
          }),
        }),
  });
}

/** Parameter values as the wire takes them: text as it is, anything else as JSON. */
function paramTexts(params: Readonly<Record<string, unknown>>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(params).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]),
  );
}

/** A parameter's value read back: JSON when it parses, else the bare text a string parameter may be. */
function paramValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function templateFrom(message: TemplateMessage): Template {
  return {
    orgId: message.orgId,
    name: message.name,
    version: message.version,
    job: jobSpecFrom(required(message.job, "TemplateService", "job spec")),
    parameters: message.parameters.map((parameter) => ({
      name: parameter.name,
      type: parameter.type === ParameterType.UNSPECIFIED ? ParameterType.STRING : parameter.type,
      required: parameter.required,
      ...(parameter.defaultJson ? { default: JSON.parse(parameter.defaultJson) as unknown } : {}),
      description: parameter.description,
    })),
    description: message.description,
    createTime: message.createTime && timestampDate(message.createTime),
  };
}

function scheduleFrom(message: ScheduleMessage, upcoming: readonly Timestamp[] = []): Schedule {
  const template = message.template;
  return {
    id: message.id,
    orgId: message.orgId,
    cron: message.cron,
    timeZone: message.timeZone,
    everyMs: message.interval && durationMs(message.interval),
    job: message.job && jobSpecFrom(message.job),
    template: template && {
      name: template.name,
      version: template.version,
      params: Object.fromEntries(Object.entries(template.parameters).map(([key, text]) => [key, paramValue(text)])),
    },
    overlap: message.overlap === OverlapPolicy.UNSPECIFIED ? OverlapPolicy.SKIP : message.overlap,
    catchUp: message.catchUp === CatchUpPolicy.UNSPECIFIED ? CatchUpPolicy.SKIP : message.catchUp,
    paused: message.paused,
    nextFireTime: message.nextFireTime && timestampDate(message.nextFireTime),
    lastFireTime: message.lastFireTime && timestampDate(message.lastFireTime),
    lastJobId: message.lastJobId,
    createTime: message.createTime && timestampDate(message.createTime),
    updateTime: message.updateTime && timestampDate(message.updateTime),
    upcoming: upcoming.map((time) => timestampDate(time)),
  };
}
