import NIOCore

/// An I_T nexus as reservations see it: the initiator port (its iSCSI name and the session's ISID) at this
/// target's one portal group. A session that logs in again with the same name and ISID is the same nexus
/// (RFC 7143 §4.4.3), which is what lets a persistent registration outlive a connection.
public struct SCSINexus: Hashable, Sendable, Codable {
    public var initiatorName: String
    /// The Initiator Session ID, 6 bytes.
    public var isid: UInt64

    public init(initiatorName: String, isid: UInt64) {
        self.initiatorName = initiatorName
        self.isid = isid
    }
}

/// The reservations of one logical unit (SPC-4 §5.13), shared by every session that reaches it: SPC-2's
/// RESERVE/RELEASE and persistent reservations. A pure value: the server keeps one per unit behind a lock,
/// asks `permits` before it runs a command, hands reservation commands to `execute`, and reports
/// `nexusLost` and `reset`.
///
/// Registrations outlive sessions; they outlive the process only when the server offers persistence
/// (`persistenceOffered`, REPORT CAPABILITIES' PTPL_C) and the last REGISTER set APTPL: the server then
/// saves `persistent` durably before it answers a command that changed it, and restores it at start.
/// The unit attentions a command owes other registrants (RESERVATIONS PREEMPTED, REGISTRATIONS PREEMPTED,
/// RESERVATIONS RELEASED) come back from `run` as notices; the server establishes them
/// (`SCSIUnitAttentions`).
public struct SCSIReservations: Sendable, Equatable {
    /// The one reservation a logical unit can hold: SPC-2's or a persistent one, never both (§5.13.3).
    public enum Reservation: Sendable, Equatable {
        /// RESERVE(6)/(10) by this nexus.
        case reserved(SCSINexus)
        /// PERSISTENT RESERVE OUT RESERVE (or PREEMPT) by `holder`; for the all-registrants types every
        /// registrant is a holder and `holder` only says who took it.
        case persistent(SCSIPersistentReservationType, holder: SCSINexus)
    }

    /// A registered reservation key and the nexus it belongs to.
    public struct Registration: Sendable, Equatable, Codable {
        public var nexus: SCSINexus
        public var key: UInt64
    }

    /// How a reservation restricts a command (SPC-4 Table 63's columns, SBC-4 Table 13).
    public enum Access: Sendable, Equatable {
        /// Never in conflict: INQUIRY, REPORT LUNS, REQUEST SENSE.
        case unaffected
        /// Reads the unit's state but no data: allowed under persistent reservations, not under RESERVE.
        case status
        /// Reads data: in conflict with the exclusive-access types.
        case read
        /// Changes data: in conflict with every type for a nexus without write access.
        case write
        /// RESERVE, RELEASE, PERSISTENT RESERVE IN/OUT: decided when `execute` runs them.
        case reservation
    }

    /// What a reservation command came to.
    public enum Outcome: Sendable, Equatable {
        case good
        /// GOOD with parameter data (PERSISTENT RESERVE IN), before the allocation length cuts it.
        case data(ByteBuffer)
        /// RESERVATION CONFLICT status.
        case conflict
        /// CHECK CONDITION with this sense; nothing changed.
        case sense(SCSISense)
    }

    /// A unit attention condition a reservation command established for another I_T nexus (SPC-4 §5.13).
    public struct Notice: Sendable, Equatable {
        public var nexus: SCSINexus
        public var condition: SCSIUnitAttention
        public init(_ condition: SCSIUnitAttention, for nexus: SCSINexus) {
            self.nexus = nexus
            self.condition = condition
        }
    }

    /// Registrations one logical unit keeps: one per initiator port, so this covers the hosts times paths
    /// of a cluster; it bounds the memory a unit's state takes and keeps READ FULL STATUS (up to ~270 bytes
    /// a registration with a 223-byte iSCSI name) under the 64 KiB its allocation length can ask for.
    public static let maximumRegistrations = 128

    public internal(set) var reservation: Reservation?
    /// In the order they were made (READ KEYS lists them so).
    public internal(set) var registrations: [Registration] = []
    /// PRgeneration (SPC-4 §6.16.2): counts changes to the registrations, not to the reservation.
    public internal(set) var generation: UInt32 = 0
    /// PTPL_A: the last REGISTER that succeeded set APTPL, so registrations and the persistent reservation
    /// must survive a restart (SPC-4 §5.13.5).
    public internal(set) var persistsThroughPowerLoss = false
    /// PTPL_C: the server has somewhere durable to keep `persistent`; without it APTPL is refused.
    public var persistenceOffered: Bool

    public init(persistenceOffered: Bool = false) {
        self.persistenceOffered = persistenceOffered
    }

    /// What survives a restart: everything persistent, once APTPL asked for it (never a RESERVE(6)/(10)).
    public struct Persistent: Sendable, Equatable, Codable {
        public struct Held: Sendable, Equatable, Codable {
            public var type: SCSIPersistentReservationType
            public var holder: SCSINexus
        }
        public var registrations: [Registration]
        public var reservation: Held?
        public var generation: UInt32
    }

    /// The state to keep across a restart; nil when APTPL is off (a restart then forgets everything).
    public var persistent: Persistent? {
        guard persistsThroughPowerLoss else { return nil }
        var held: Persistent.Held?
        if case .persistent(let type, let holder) = reservation { held = Persistent.Held(type: type, holder: holder) }
        return Persistent(registrations: registrations, reservation: held, generation: generation)
    }

    /// A unit's state as saved before a restart (APTPL was on, so it stays on).
    public init(restoring saved: Persistent) {
        self.init(persistenceOffered: true)
        registrations = saved.registrations
        reservation = saved.reservation.map { .persistent($0.type, holder: $0.holder) }
        generation = saved.generation
        persistsThroughPowerLoss = true
    }

    /// Nothing reserved or registered, and nothing for a restart to keep: the server need not remember
    /// the unit.
    public var isInitial: Bool { self == SCSIReservations(persistenceOffered: persistenceOffered) }

    /// The access class of `command`.
    public static func access(of command: SCSICommand) -> Access {
        switch command {
        case .inquiry, .reportLUNs, .requestSense:
            .unaffected
        case .testUnitReady, .readCapacity10, .readCapacity16, .reportSupportedOperationCodes, .noOperation:
            .status
        case .read, .verify, .modeSense, .getLBAStatus, .preFetch, .receiveCopyResults:
            .read
        case .write, .writeSame, .unmap, .compareAndWrite, .orWrite, .synchronizeCache, .extendedCopy:
            .write
        case .reserve, .release, .persistentReserveIn, .persistentReserveOut:
            .reservation
        }
    }

    /// Whether `command` from `nexus` may run now; false: RESERVATION CONFLICT. Reservation commands are
    /// always let through to `execute`, which decides them.
    public func permits(_ command: SCSICommand, from nexus: SCSINexus) -> Bool {
        let access = Self.access(of: command)
        switch reservation {
        case nil:
            return true
        case .reserved(let holder):
            // SPC-2 §5.5.1: the unit is the holder's alone; only commands that report on the target pass.
            return holder == nexus || access == .unaffected || access == .reservation
        case .persistent(let type, _):
            if isHolder(nexus) { return true }
            let registered = key(of: nexus) != nil
            switch access {
            case .unaffected, .status, .reservation: return true
            case .read: return !type.exclusiveAccess || (type.registrantsOnly && registered)
            case .write: return type.registrantsOnly && registered
            }
        }
    }

    /// Runs RESERVE, RELEASE or a PERSISTENT RESERVE IN/OUT from `nexus`; `parameters`: the data-out.
    public mutating func execute(_ command: SCSICommand, parameters: ByteBuffer?, from nexus: SCSINexus) -> Outcome {
        run(command, parameters: parameters, from: nexus).outcome
    }

    /// `execute`, with the unit attentions the command established for other nexuses (none for a refusal).
    public mutating func run(_ command: SCSICommand, parameters: ByteBuffer?, from nexus: SCSINexus)
        -> (outcome: Outcome, notices: [Notice])
    {
        switch command {
        case .persistentReserveOut(let action, _, let type, _):
            if case .reserved = reservation { return (.conflict, []) }
            return persistentReserveOut(action: action, type: type, parameters: parameters, from: nexus)
        default:
            return (executeWithoutNotices(command, from: nexus), [])
        }
    }

    /// RESERVE, RELEASE and PERSISTENT RESERVE IN: none establishes a unit attention.
    mutating func executeWithoutNotices(_ command: SCSICommand, from nexus: SCSINexus) -> Outcome {
        switch command {
        case .reserve:
            // With CRH 0 any registration makes RESERVE and RELEASE conflict, whoever sends them (§5.13.3).
            guard registrations.isEmpty else { return .conflict }
            switch reservation {
            case nil:
                reservation = .reserved(nexus)
                return .good
            case .reserved(let holder):
                return holder == nexus ? .good : .conflict
            case .persistent:
                return .conflict
            }
        case .release:
            guard registrations.isEmpty else { return .conflict }
            // From another nexus, or with nothing reserved, RELEASE does nothing and succeeds.
            if case .reserved(nexus) = reservation { reservation = nil }
            return .good
        case .persistentReserveIn(let action, _):
            // A unit RESERVEd makes every PERSISTENT RESERVE IN and OUT conflict, whoever sends it.
            if case .reserved = reservation { return .conflict }
            return persistentReserveIn(action: action)
        default:
            return .sense(.invalidOperationCode)
        }
    }

    /// The nexus's session ended (logout, connection loss): its RESERVE ends (SPC-2 §5.5.1); its
    /// registrations and persistent reservation stay, as SPC-4 §5.13.1 requires.
    public mutating func nexusLost(_ nexus: SCSINexus) {
        if case .reserved(nexus) = reservation { reservation = nil }
    }

    /// LOGICAL UNIT RESET or a target reset: the RESERVE ends; persistent state does not change.
    public mutating func reset() {
        if case .reserved = reservation { reservation = nil }
    }

    /// The key `nexus` registered, if any.
    public func key(of nexus: SCSINexus) -> UInt64? {
        registrations.first { $0.nexus == nexus }?.key
    }

    /// Whether `nexus` holds the persistent reservation (for the all-registrants types: is registered).
    public func isHolder(_ nexus: SCSINexus) -> Bool {
        guard case .persistent(let type, let holder) = reservation else { return false }
        return type.allRegistrants ? key(of: nexus) != nil : holder == nexus
    }
}
