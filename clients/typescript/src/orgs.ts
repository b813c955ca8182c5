/**
 * `client.orgs`: an organisation's limits, quotas and pauses through
 * zbrain.v1.OrgService, as the Python client's `client.orgs`. Reading needs a
 * token of the organisation; changing, pausing and resuming need an admin
 * token (docs/limits.md says what each limit does).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { InvalidArgumentError, required } from "./errors.js";
import {
  LabelSelectorSchema,
  type OrgService,
  type OrgSettings as OrgSettingsMessage,
} from "./gen/zbrain/v1/org_pb.js";
import { type OrgSettings, orgSettingsFrom } from "./models.js";
import type { UnaryCaller } from "./connection.js";

/** The limits `update` sets; each one left out keeps its value, 0 removes the org's own. */
export interface OrgLimits {
  readonly maxRunningJobs?: number;
  readonly maxStartsPerSecond?: number;
  readonly maxWaitingJobs?: number;
  readonly maxLogBytes?: number;
  readonly maxArtifactBytes?: number;
  readonly retentionDays?: number;
}

/** An organisation's settings; reached as `client.orgs`, never built directly. */
export class Orgs {
  /** @internal */
  constructor(
    private readonly service: Client<typeof OrgService>,
    private readonly unary: UnaryCaller,
  ) {}

  /** The settings of `org` (default: the token's organisation). */
  async get(org = ""): Promise<OrgSettings> {
    const response = await this.unary((options) => this.service.getOrgSettings({ orgId: org }, options));
    return settings(response.settings);
  }

  /** Set the limits given, keeping the others; InvalidArgumentError for a value its field cannot hold. */
  async update(org: string, limits: OrgLimits): Promise<OrgSettings> {
    const request = {
      orgId: org,
      ...int32("maxRunningJobs", limits.maxRunningJobs),
      ...(limits.maxStartsPerSecond === undefined ? {} : { maxStartsPerSecond: limits.maxStartsPerSecond }),
      ...int32("maxWaitingJobs", limits.maxWaitingJobs),
      ...int64("maxLogBytes", limits.maxLogBytes),
      ...int64("maxArtifactBytes", limits.maxArtifactBytes),
      ...int32("retentionDays", limits.retentionDays),
    };
    const response = await this.unary((options) => this.service.updateOrgSettings(request, options));
    return settings(response.settings);
  }

  /**
   * Start no more jobs of `org`, or only none of its jobs whose labels hold
   * every pair of `selector`; running jobs finish and submits are accepted.
   */
  async pause(org: string, selector?: Readonly<Record<string, string>>): Promise<OrgSettings> {
    const request = { orgId: org, ...labelSelector(selector) };
    const response = await this.unary((options) => this.service.pauseOrg(request, options));
    return settings(response.settings);
  }

  /** Lift the pause of `org`, or of one selector as it was paused. */
  async resume(org: string, selector?: Readonly<Record<string, string>>): Promise<OrgSettings> {
    const request = { orgId: org, ...labelSelector(selector) };
    const response = await this.unary((options) => this.service.resumeOrg(request, options));
    return settings(response.settings);
  }
}

/**
 * The selector of a pause or resume; the whole org only when none is given:
 * an empty object is sent as a selector, which the server refuses by name,
 * rather than widening the call to the whole organisation.
 */
function labelSelector(labels: Readonly<Record<string, string>> | undefined) {
  return labels === undefined ? {} : { selector: create(LabelSelectorSchema, { labels: { ...labels } }) };
}

function int32<K extends string>(name: K, value: number | undefined): Partial<Record<K, number>> {
  if (value === undefined) {
    return {};
  }
  if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) {
    throw invalid(name, value);
  }
  return { [name]: value } as Record<K, number>;
}

function int64<K extends string>(name: K, value: number | undefined): Partial<Record<K, bigint>> {
  if (value === undefined) {
    return {};
  }
  if (!Number.isSafeInteger(value)) {
    throw invalid(name, value);
  }
  return { [name]: BigInt(value) } as Record<K, bigint>;
}

function invalid(name: string, value: number): InvalidArgumentError {
  return new InvalidArgumentError("invalid organisation settings", {
    violations: [{ field: name, description: `cannot hold ${value}: it must be a whole number in the field's range` }],
  });
}

function settings(message: OrgSettingsMessage | undefined): OrgSettings {
  return orgSettingsFrom(required(message, "OrgService", "organisation settings"));
}
