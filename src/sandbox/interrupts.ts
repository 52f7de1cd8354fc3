export class InterruptedError extends Error {}

/** Races a promise against SIGINT/SIGTERM. */
export type Race = <T>(p: Promise<T>) => Promise<T>;

/**
 * Runs `body`, turning SIGINT/SIGTERM into a rejection of what it awaits
 * through `race` (an InterruptedError) and an abort of `signal`, then `cleanup` always, with further
 * signals ignored: a second Ctrl-C must not leave a mount behind. The first
 * failure is the one thrown; a clean-up failure on top of it only goes to
 * `onCleanupError`. A signal that came while nothing was raced still fails
 * the call once the body is done.
 */
export async function withCleanup<T>(body: (race: Race, signal: AbortSignal) => Promise<T>, cleanup: () => Promise<void>, onCleanupError: (err: Error) => void): Promise<T> {
  let interrupted: string | null = null;
  let wake: () => void = () => {};
  // For work that can stop itself (a conversion): raced alone, it would go on in the background.
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted = signal;
    abort.abort(new InterruptedError(`interrupted by ${signal}`));
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interruption = new Promise<never>((_, reject) => {
    wake = () => reject(new InterruptedError(`interrupted by ${interrupted}`));
  });
  interruption.catch(() => {}); // met through race() by whatever is waiting; with nothing waiting, not an unhandled rejection
  const race: Race = (p) => Promise.race([p, interruption]);

  let failure: unknown = null;
  let value: T | undefined;
  try {
    value = await body(race, abort.signal);
  } catch (err) {
    failure = err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const ignore = (): void => {};
    process.on('SIGINT', ignore);
    process.on('SIGTERM', ignore);
    try {
      await cleanup();
    } catch (err) {
      if (!failure) failure = err;
      else onCleanupError(err as Error);
    } finally {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', ignore);
    }
  }
  if (failure) throw failure;
  if (interrupted) throw new InterruptedError(`interrupted by ${interrupted}`);
  return value as T;
}
