/// Why `CloneGroupMachine` refused an event; nothing changed. The volumes are ids: the service names them
/// when it turns the refusal into the error users see (`error(naming:)`), whose text users and tests rely on.
enum CloneGroupRefusal: Sendable, Hashable {
    /// The volume is not a clone of this group.
    case notAClone(UInt64)
    /// `clone add` named a clone as the source.
    case sourceIsAClone(UInt64)
    /// `clone add --extent-size` differs from the group's.
    case extentSizeMismatch(source: UInt64, groupExtentSize: UInt64)
    /// `clone add` while a clone is being restored into the source.
    case sourceBeingRestored(UInt64, from: UInt64)
    /// The new volume is already in the group.
    case alreadyInGroup(UInt64)
    /// A job works on the clone: wait for it or cancel it first.
    case jobRunning(UInt64, CloneGroupMachine.RunningJob)
    /// `clone remove` of the clone the source is being restored from.
    case removeWhileRestoring(UInt64, source: UInt64, CloneState)
    case alreadyFractured(UInt64)
    case alreadySynchronized(UInt64)
    /// The operation (`verb`) needs another state than the clone's.
    case wrongState(UInt64, CloneState, verb: String, deltaExtents: UInt64)
    /// Another clone is being restored into the source.
    case oneRestoreAtATime(UInt64, restoring: UInt64)
    /// A restore into the source while another clone is mirrored (it would change too).
    case otherCloneMirrored(UInt64, CloneState, source: UInt64)
    /// Delete, resize or rollback of a group's source.
    case sourceOfClones(UInt64, clones: [UInt64], CloneGroupMachine.VolumeChange)
    /// Delete, resize or rollback of a clone.
    case memberOfGroup(UInt64)
    /// A host write to a clone that is not fractured.
    case cloneNotWritable(UInt64, source: UInt64, CloneState)

    /// The error a user sees; `name` gives a volume's name.
    func error(naming name: (UInt64) -> String) -> EngineError {
        switch self {
        case .notAClone(let clone):
            return EngineError(.notFound, "'\(name(clone))' is not a clone (`cairn clone list` shows the clones)")
        case .sourceIsAClone(let volume):
            return EngineError(
                .busy, "'\(name(volume))' is itself a clone; clone its source, or remove it from its group first")
        case .extentSizeMismatch(let source, let extentSize):
            return EngineError(
                .invalidArgument,
                "the clone group of '\(name(source))' uses \(extentSize)-byte extents; omit --extent-size or use that")
        case .sourceBeingRestored(let source, let clone):
            return EngineError(
                .busy, "'\(name(source))' is being restored from '\(name(clone))'; add clones once it finishes")
        case .alreadyInGroup(let volume):
            return EngineError(.alreadyExists, "'\(name(volume))' is already in this clone group")
        case .jobRunning(let clone, let job):
            return EngineError(
                .busy,
                "job \(job.id) (\(job.kind)) is running on '\(name(clone))'; wait for it or cancel it "
                    + "(`cairn job cancel \(job.id)`)")
        case .removeWhileRestoring(let clone, let source, let state):
            let resume = state == .restoring ? "restore \(name(clone)) --protected" : "reverse-sync \(name(clone))"
            return EngineError(
                .busy,
                "'\(name(clone))' is being restored into '\(name(source))', which reads through it until "
                    + "the restore finishes; resume it (`cairn clone \(resume)`)")
        case .alreadyFractured(let clone):
            return EngineError(.busy, "'\(name(clone))' is already fractured")
        case .alreadySynchronized(let clone):
            return EngineError(.busy, "'\(name(clone))' is already synchronized with its source")
        case .wrongState(let clone, let state, let verb, let deltaExtents):
            let why =
                switch state {
                case .synchronizing: "it is still synchronizing (\(deltaExtents) extents to copy)"
                case .synchronized: "it is synchronized (mirrored) with its source; fracture it first"
                case .fractured: "it is fractured; sync it first (`cairn clone sync \(name(clone))`)"
                case .reverseSyncing: "a reverse sync from it is in progress"
                case .restoring: "a protected restore from it is in progress"
                }
            return EngineError(.busy, "cannot \(verb) '\(name(clone))': \(why)")
        case .oneRestoreAtATime(let source, let restoring):
            return EngineError(
                .busy,
                "'\(name(source))' is being restored from '\(name(restoring))'; "
                    + "a source takes one restore at a time, and no sync while it runs")
        case .otherCloneMirrored(let other, let state, let source):
            return EngineError(
                .busy,
                "'\(name(other))' is \(state.rawValue) with '\(name(source))'; "
                    + "fracture it first so that the restore does not change it too")
        case .sourceOfClones(let source, let clones, let change):
            let names = clones.map(name).sorted().joined(separator: ", ")
            return EngineError(
                .busy,
                "'\(name(source))' is the source of clone(s) \(names); \(change.doing) would break their delta maps. "
                    + "Remove the clones first (`cairn clone remove`)")
        case .memberOfGroup(let clone):
            return EngineError(
                .busy,
                "'\(name(clone))' is a clone in a clone group; remove it from the group first "
                    + "(`cairn clone remove \(name(clone))`)")
        case .cloneNotWritable(let clone, let source, let state):
            return EngineError(
                .readOnly,
                "volume '\(name(clone))' is a clone of '\(name(source))' and is \(state.rawValue); only a fractured "
                    + "clone takes writes (`cairn clone fracture \(name(clone))`)")
        }
    }
}
