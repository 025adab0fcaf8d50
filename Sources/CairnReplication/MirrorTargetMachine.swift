import MirrorProtocol

/// One target volume's pairing as a pure state machine: frames from the primary, host writes and
/// promotion go in, the actions `MirrorTargetService` must carry out come out, in order, or a typed
/// refusal that changes nothing. No I/O and no locks: the service feeds one volume's events one at a
/// time and carries out each transition's actions before the next event, so a record is saved at most
/// once per transition and never over a newer one.
///
/// | state \ event     | synchronized | sever                 | host write           | promote                |
/// |-------------------|--------------|-----------------------|----------------------|------------------------|
/// | unpaired          | refused      | refused               | (not a mirror: none) | refused                |
/// | mirroring         | mirroring    | severed(false)        | refused (read-only)  | promoted(g, false)     |
/// | severed(m)        | refused      | (none)                | severed(true)        | promoted(g, m)         |
/// | promoted(g, m)    | refused      | (none)                | promoted(g, true)    | (none)                 |
/// | takingChanges     | mirroring    | interrupted(-, false) | refused (read-only)  | interrupted(g, false)  |
/// | interrupted(p, w) | refused      | (none)                | interrupted(p, true) | interrupted(p ?? g, w) |
///
/// `remove` unpairs any paired state; `sever`, `promote` and `remove` release the primary's connection.
/// Establish is refused when the checks of `establish(_:)` say so (another pair, a generation the volume
/// never held, changes here without a choice, a take after writes during the take).
public struct MirrorTargetMachine: Sendable, Equatable {
    /// What the service must do, in this order.
    public enum Action: Sendable, Equatable {
        /// Create the target change map (empty, durable) if missing: hosts may write the volume next.
        case createChangeMap
        /// Set the host write's extents in the target change map, durably, before its data is written.
        case markExtentsDirty
        /// Replace the record file with this record, durably; the transition counts only once it is saved.
        case saveRecord(TargetMirrorRecord)
        /// Delete the record file: the volume is no longer a mirror target.
        case removeRecord
        /// Drop the target change map: its changes were taken or discarded, or the pairing ended.
        case removeChangeMap
        /// The connection that sent the establish now mirrors the volume.
        case takeOwnership
        /// The primary's connection no longer mirrors the volume: its next data frame is refused.
        case releaseOwnership
        /// Answer the establish (`fullSyncNeeded`: every extent must be copied).
        case answerEstablish(fullSyncNeeded: Bool)
    }

    public enum Outcome: Sendable, Equatable {
        /// The transition happened (or nothing had to change: no actions).
        case accepted([Action])
        /// Refused, with a reason the primary or the operator can act on; nothing changed.
        case refused(MirrorRemoteError)
    }

    /// The primary's establish, after the service checked the pool (size, chunk size, attachments, space).
    public struct Establish: Sendable, Equatable {
        public var volume: String
        public var generations: MirrorGenerations
        public var options: MirrorEstablishRequest.Options
        public var node: String
        /// The service created the volume for this establish.
        public var created: Bool
        /// Bytes the existing volume holds (an initial establish refuses to overwrite them without a discard).
        public var allocatedBytes: UInt64

        public init(
            volume: String, generations: MirrorGenerations, options: MirrorEstablishRequest.Options, node: String,
            created: Bool, allocatedBytes: UInt64
        ) {
            self.volume = volume
            self.generations = generations
            self.options = options
            self.node = node
            self.created = created
            self.allocatedBytes = allocatedBytes
        }
    }

    public enum Event: Sendable, Equatable {
        case establish(Establish)
        /// The primary holds the copy equal at `generation` (and took the target's changes, if it was taking them).
        case synchronized(generation: UInt64)
        case sever
        case remove
        /// A host is about to write the volume.
        case hostWrite
        /// `cairn mirror promote`; `generation` is the fresh random value the promoted data starts.
        case promote(generation: UInt64)
    }

    public let volumeID: UInt64
    /// The pairing; nil when the volume is not (or no longer) a mirror target.
    public private(set) var record: TargetMirrorRecord?

    public init(volumeID: UInt64, record: TargetMirrorRecord?) {
        self.volumeID = volumeID
        self.record = record
    }

    /// Feeds one event. On `.refused` the machine is unchanged.
    public mutating func handle(_ event: Event) -> Outcome {
        if case .establish(let request) = event { return establish(request) }
        guard let current = record else {
            switch event {
            case .hostWrite: return .accepted([])
            case .promote:
                return refuse(.unknownVolume, "volume \(volumeID) is not the target of a mirror here")
            default: return refuse(.badAddress, "volume \(volumeID) is not paired on the target")
            }
        }
        switch event {
        case .establish:
            preconditionFailure("handled above")
        case .remove:
            record = nil
            return .accepted([.removeRecord, .removeChangeMap, .releaseOwnership])
        case .synchronized(let generation):
            guard !current.state.isHostWritable else {
                // A frame that passed the ownership check just before a sever or promotion: the volume is
                // the hosts' now, and forgetting its changes would lose them.
                return refuse(
                    current.promoted ? .targetChanged : .badAddress,
                    "volume \(volumeID) was \(current.promoted ? "promoted" : "severed") on the target")
            }
            return transition(to: .mirroring, generation: generation, then: [.removeChangeMap])
        case .sever:
            // The primary's connection lets go of the volume: hosts may write it now.
            switch current.state {
            case .mirroring: return transition(to: .severed(modified: false), then: [.releaseOwnership])
            case .takingChanges:
                return transition(
                    to: .takeInterrupted(promotedGeneration: nil, writtenDuringTake: false), then: [.releaseOwnership])
            case .severed, .promoted, .takeInterrupted: return .accepted([.releaseOwnership])
            }
        case .hostWrite:
            switch current.state {
            case .mirroring, .takingChanges:
                return refuse(
                    .volumeInUse,
                    "volume \(volumeID) is the target of a mirror and read-only to hosts until severed or promoted")
            case .severed(false): return transition(to: .severed(modified: true), first: [.markExtentsDirty])
            case .promoted(let generation, false):
                return transition(to: .promoted(generation: generation, modified: true), first: [.markExtentsDirty])
            case .takeInterrupted(let generation, false):
                // Durable before the data: the primary's resumed take must not miss this write unknowingly.
                return transition(
                    to: .takeInterrupted(promotedGeneration: generation, writtenDuringTake: true),
                    first: [.markExtentsDirty])
            case .severed(true), .promoted(_, true), .takeInterrupted(_, true):
                return .accepted([.markExtentsDirty])
            }
        case .promote(let generation):
            // The map exists before hosts can write: their writes only add bits. The primary's connection
            // loses the volume, so its next data frame is refused and it learns of the promotion.
            let next: TargetMirrorState
            switch current.state {
            case .mirroring: next = .promoted(generation: generation, modified: false)
            case .severed(let modified): next = .promoted(generation: generation, modified: modified)
            case .takingChanges: next = .takeInterrupted(promotedGeneration: generation, writtenDuringTake: false)
            case .takeInterrupted(nil, let written):
                next = .takeInterrupted(promotedGeneration: generation, writtenDuringTake: written)
            case .promoted, .takeInterrupted: return .accepted([])
            }
            return transition(to: next, first: [.createChangeMap], then: [.releaseOwnership])
        }
    }

    /// The record-level checks of an establish (the pool's come first, in the service) and the new pairing.
    private mutating func establish(_ request: Establish) -> Outcome {
        let name = request.volume
        let take = request.options.contains(.takeTargetChanges)
        let discard = request.options.contains(.discardTargetChanges)
        guard !(take && discard) else {
            return refuse(.invalidArgument, "take or discard the target's changes, not both")
        }
        var fullSync = !request.created
        // Whether the target keeps its change map and its changes (the primary is taking them).
        var keepChanges = false
        if let current = record {
            if current.pairID != request.generations.pairID {
                guard discard else {
                    return refuse(
                        .volumeInUse,
                        "volume '\(name)' is already the mirror of another primary volume (from \(current.primaryNode))"
                    )
                }
            } else if request.options.contains(.initial) {
                fullSync = true
            } else {
                // The target holds the primary's last synchronized generation, or its current one: the
                // primary told it "in sync at G" (after every extent was copied) and stopped before it
                // recorded G as synchronized itself. Its change map still lists whatever changed since.
                let known =
                    current.generation == request.generations.synced
                    || current.generation == request.generations.current
                if !known && !discard {
                    return refuse(
                        .diverged,
                        "volume '\(name)' holds generation \(String(current.generation, radix: 16)) but the primary last synchronized generation \(String(request.generations.synced, radix: 16)); only --discard-target-changes can resume (a full copy from the primary)"
                    )
                }
                if current.changedHere && !discard && !take {
                    let how =
                        current.promoted
                        ? "was promoted and written on the target"
                        : "was written on the target while the mirror was severed"
                    return refuse(
                        .targetChanged,
                        current.modified ? "volume '\(name)' \(how)" : "volume '\(name)' was promoted on the target")
                }
                if take && current.writtenDuringTake {
                    return refuse(
                        .diverged,
                        "volume '\(name)' was written on the target again while the primary was taking its earlier changes; those newest writes are not in the set being taken"
                    )
                }
                keepChanges = take && current.changedHere
                fullSync = discard && (!known || current.changedHere)
            }
        } else if !request.created {
            if !request.options.contains(.initial) {
                guard discard else {
                    return refuse(
                        .diverged,
                        "volume '\(name)' on the target has no record of this mirror (it was removed or replaced)")
                }
            } else if request.allocatedBytes > 0 && !discard {
                return refuse(
                    .volumeInUse,
                    "volume '\(name)' on the target already holds \(request.allocatedBytes) bytes of data that mirroring would overwrite"
                )
            }
        }
        // Kept until `synchronized`: the primary copies the extents it lists, and may reconnect meanwhile.
        let paired = TargetMirrorRecord(
            volumeID: volumeID, pairID: request.generations.pairID, generation: request.generations.synced,
            primaryNode: request.node, state: keepChanges ? .takingChanges : .mirroring)
        record = paired
        return .accepted(
            [.saveRecord(paired)] + (keepChanges ? [] : [.removeChangeMap])
                + [.takeOwnership, .answerEstablish(fullSyncNeeded: fullSync)])
    }

    private func refuse(_ code: MirrorRemoteError.Code, _ message: String) -> Outcome {
        .refused(MirrorRemoteError(code, message))
    }

    /// Moves the paired record to `state` (and `generation`): `first`, then the save, then `then`.
    private mutating func transition(
        to state: TargetMirrorState, generation: UInt64? = nil, first: [Action] = [], then: [Action] = []
    ) -> Outcome {
        guard var next = record else { preconditionFailure("a transition needs a pairing") }
        next.state = state
        if let generation { next.generation = generation }
        record = next
        return .accepted(first + [.saveRecord(next)] + then)
    }
}
