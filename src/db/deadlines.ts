/**
 * Deadlines without a timer each: the work under way that shares one time limit, in a
 * list per limit, expired by one interval per list. Used by every query, transaction
 * and pre-ping of a Database.
 */
import { performance } from 'node:perf_hooks';
import { DatabaseUnavailableError } from '../domain/errors.ts';

/** Something with a deadline in a DeadlineList. */
export interface Deadline {
  deadline: number;
  prev: Deadline | null;
  next: Deadline | null;
  expire(now: number): void;
}

/**
 * The deadlines of work under way that share one time limit, in the order they started —
 * which, with one limit, is the order they expire. Adding and removing are O(1) (a doubly
 * linked list); one interval per list, running only while the list is not empty, expires
 * the overdue ones from the head. This replaces a timer per query: a deadline may fire up to
 * one tick late (a twentieth of the limit, at most 250 ms).
 */
export class DeadlineList {
  private head: Deadline | null = null;
  private tail: Deadline | null = null;
  private timer: NodeJS.Timeout | undefined;
  private readonly tickMs: number;

  readonly ms: number;

  constructor(ms: number) {
    this.ms = ms;
    this.tickMs = Math.max(5, Math.min(250, Math.floor(ms / 20)));
  }

  add(item: Deadline, now = performance.now()): void {
    item.deadline = now + this.ms;
    item.prev = this.tail;
    item.next = null;
    if (this.tail === null) this.head = item;
    else this.tail.next = item;
    this.tail = item;
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  remove(item: Deadline): void {
    if (item.prev === null) {
      if (this.head !== item) return; // not (or no longer) in the list
      this.head = item.next;
    } else {
      item.prev.next = item.next;
    }
    if (item.next === null) this.tail = item.prev;
    else item.next.prev = item.prev;
    item.prev = null;
    item.next = null;
  }

  private tick(): void {
    const now = performance.now();
    for (let item = this.head; item !== null && item.deadline <= now; item = this.head) {
      this.remove(item);
      item.expire(now);
    }
    if (this.head === null && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

const lists = new Map<number, DeadlineList>();

/** The list of a time limit, shared by every Database with that limit. */
export function deadlineList(ms: number): DeadlineList {
  let list = lists.get(ms);
  if (list === undefined) {
    list = new DeadlineList(ms);
    lists.set(ms, list);
  }
  return list;
}

/**
 * Rejects with DatabaseUnavailableError when `work` takes longer than the list's limit
 * (transactions and pre-pings; queries have their own record, see PendingQuery).
 */
export function withDeadline<T>(
  list: DeadlineList,
  work: PromiseLike<T>,
  name: string,
  onTimeout: () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const item: Deadline = {
      deadline: 0,
      prev: null,
      next: null,
      expire() {
        settled = true;
        onTimeout();
        reject(new DatabaseUnavailableError(`the database did not answer ${name} within ${list.ms} ms`));
      },
    };
    let settled = false;
    list.add(item);
    work.then(
      (value) => {
        if (settled) return;
        settled = true;
        list.remove(item);
        resolve(value);
      },
      (error) => {
        if (settled) return;
        settled = true;
        list.remove(item);
        reject(error);
      },
    );
  });
}
