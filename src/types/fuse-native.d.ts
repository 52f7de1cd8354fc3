// The parts of fuse-native 2.2.6 this project uses (the package ships no types).
declare module 'fuse-native' {
  type Cb = (...args: any[]) => void;
  interface FuseOptions {
    force?: boolean;
    mkdir?: boolean;
    allowOther?: boolean;
    debug?: boolean;
    fsname?: string;
    kernelCache?: boolean;
    entryTimeout?: number;
    attrTimeout?: number;
    maxRead?: number;
    timeout?: number | false | Record<string, number | false>;
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, Cb>, opts?: FuseOptions);
    mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    protected _fuseOptions(): string;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static isConfigured(cb: (err: Error | null, yes: boolean) => void): void;
  }
  export = Fuse;
}
