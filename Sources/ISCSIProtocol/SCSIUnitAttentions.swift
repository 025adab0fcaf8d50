/// A unit attention condition this target establishes (SAM-5 §5.14; the codes are SPC-4 Table 49's).
public enum SCSIUnitAttention: Sendable, Hashable, CaseIterable {
    /// 29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED: the first command of an I_T nexus the
    /// target has not seen since it started. 29h/00h rather than 29h/01h (POWER ON OCCURRED) because that
    /// is what tgt reports to every new nexus and what libiscsi's test tool treats as the normal state
    /// after a login (its RESERVE(6)/RELEASE(6) helpers accept exactly this code).
    case powerOnOrReset
    /// 29h/02h SCSI BUS RESET OCCURRED: another nexus sent TARGET WARM RESET or TARGET COLD RESET (each
    /// target here has one logical unit, so a target reset resets exactly this unit).
    case targetReset
    /// 29h/03h BUS DEVICE RESET FUNCTION OCCURRED: another nexus sent LOGICAL UNIT RESET (SAM-5 §7.7).
    case logicalUnitReset
    /// 2Ah/03h RESERVATIONS PREEMPTED: another nexus's PERSISTENT RESERVE OUT CLEAR removed this nexus's
    /// registration (SPC-4 §5.13.11.2.6).
    case reservationsPreempted
    /// 2Ah/04h RESERVATIONS RELEASED: a registrants-only or all-registrants reservation ended by RELEASE,
    /// by its holder unregistering, or changed type by PREEMPT (SPC-4 §5.13.11.2.2, §5.13.10, §5.13.11.4).
    case reservationsReleased
    /// 2Ah/05h REGISTRATIONS PREEMPTED: another nexus's PREEMPT removed this nexus's registration
    /// (SPC-4 §5.13.11.4).
    case registrationsPreempted
    /// 2Ah/09h CAPACITY DATA HAS CHANGED: the volume behind the unit was resized (SBC-4 §4.10).
    case capacityDataChanged

    /// The sense data that reports the condition (sense key UNIT ATTENTION).
    public var sense: SCSISense {
        let (code, qualifier): (UInt8, UInt8) =
            switch self {
            case .powerOnOrReset: (0x29, 0x00)
            case .targetReset: (0x29, 0x02)
            case .logicalUnitReset: (0x29, 0x03)
            case .reservationsPreempted: (0x2A, 0x03)
            case .reservationsReleased: (0x2A, 0x04)
            case .registrationsPreempted: (0x2A, 0x05)
            case .capacityDataChanged: (0x2A, 0x09)
            }
        return SCSISense(key: SCSISense.keyUnitAttention, code: code, qualifier: qualifier)
    }
}

/// The pending unit attention conditions of one logical unit, a queue per I_T nexus (SAM-5 §5.14): events
/// in (a session arrived, a command arrived, a condition was established), what to answer out. A pure
/// value: the server keeps one per unit behind a lock, as it does `SCSIReservations`.
///
/// A command other than INQUIRY, REPORT LUNS and REQUEST SENSE from a nexus with a condition pending is
/// answered CHECK CONDITION with the oldest one, which is cleared, and does not run; INQUIRY and REPORT
/// LUNS run and clear nothing; REQUEST SENSE returns the oldest one as its parameter data and clears it.
///
/// The first time a nexus reaches the unit since this value was made (the target started) it gets POWER
/// ON, RESET, OR BUS DEVICE RESET OCCURRED; conditions meant for a nexus never seen are not kept, since
/// that report covers everything that happened before. Capacity changes are noticed by comparing the
/// capacity each event carries with the last one seen: every known nexus then gets CAPACITY DATA HAS
/// CHANGED, the one whose command noticed included.
public struct SCSIUnitAttentions: Sendable, Equatable {
    /// Conditions queued per nexus. SAM-5 leaves the size to the logical unit; 4 is what libiscsi's
    /// compliance tool clears with its TEST UNIT READY loop (`test_iscsi_tur_until_good`: five tries, the
    /// last must be GOOD) and below the 10 UNIT ATTENTIONs libiscsi's login accepts before it gives up.
    ///
    /// Overflow: a condition equal to one already pending is not queued twice; a new one arriving with the
    /// queue full replaces the whole queue with a single POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    /// SAM-5 §5.14 leaves what a logical unit does when it cannot queue a condition to it; 29h/00h tells
    /// the initiator that any of its state may have changed, so it rereads everything (capacity,
    /// reservations) and nothing it needed to hear about is hidden, only folded into one report.
    public static let maximumPending = 4

    /// Nexuses remembered per unit. Above the server's 256 connections: past it the nexus without a
    /// session inactive longest is forgotten (libiscsi picks a random ISID per context, so the set of
    /// nexuses seen since start only grows) and, should it come back, gets POWER ON, RESET, OR BUS DEVICE
    /// RESET OCCURRED again. A nexus with a session is forgotten only when every remembered one has one.
    public static let maximumNexuses = 1024

    /// Which unit attention rule a command follows (SAM-5 §5.14).
    public enum CommandClass: Sendable, Equatable {
        /// INQUIRY, REPORT LUNS: run, clear nothing.
        case reportsWithoutClearing
        /// REQUEST SENSE: return the oldest condition as parameter data and clear it.
        case requestSense
        /// Everything else: CHECK CONDITION with the oldest condition, cleared.
        case other

        /// The class of the command whose CDB starts with `opcode`.
        public init(opcode: UInt8) {
            switch opcode {
            case SCSICommand.Opcode.inquiry, SCSICommand.Opcode.reportLUNs: self = .reportsWithoutClearing
            case SCSICommand.Opcode.requestSense: self = .requestSense
            default: self = .other
            }
        }
    }

    /// What to do with an arriving command.
    public enum Decision: Sendable, Equatable {
        /// No condition to report: run the command.
        case proceed
        /// Answer CHECK CONDITION with this sense; the command does not run.
        case checkCondition(SCSISense)
        /// REQUEST SENSE: answer GOOD with this sense as the parameter data.
        case senseData(SCSISense)
    }

    struct Entry: Sendable, Equatable {
        var pending: [SCSIUnitAttention]
        /// The event counter when the nexus last showed up (which nexus to forget first).
        var lastActive: UInt64
        /// Its sessions logged in to the unit now.
        var sessions = 0
    }

    private(set) var entries: [SCSINexus: Entry] = [:]
    private var events: UInt64 = 0
    /// The unit's capacity in bytes at the last event; nil before the first.
    public private(set) var capacity: UInt64?
    /// Conditions queued since this value was made, for any nexus (wrapping): a caller that saw a nexus
    /// with nothing pending knows nothing can be pending while this has not moved.
    public private(set) var queued: UInt64 = 0

    public init() {}

    /// The conditions pending for `nexus`, oldest first.
    public func pending(for nexus: SCSINexus) -> [SCSIUnitAttention] { entries[nexus]?.pending ?? [] }

    /// Whether `nexus` has reached the unit since the target started (and is still remembered).
    public func knows(_ nexus: SCSINexus) -> Bool { entries[nexus] != nil }

    /// Nexuses remembered.
    public var nexusCount: Int { entries.count }

    /// A session of `nexus` logged in to the unit, whose capacity is now `capacity` bytes.
    public mutating func arrived(_ nexus: SCSINexus, capacity: UInt64) {
        observe(capacity: capacity)
        touch(nexus)
        entries[nexus]!.sessions += 1
    }

    /// A session of `nexus` that `arrived` ended.
    public mutating func departed(_ nexus: SCSINexus) {
        guard let sessions = entries[nexus]?.sessions, sessions > 0 else { return }
        entries[nexus]!.sessions = sessions - 1
    }

    /// A command of class `kind` arrived from `nexus`; the unit's capacity is now `capacity` bytes.
    public mutating func command(_ kind: CommandClass, from nexus: SCSINexus, capacity: UInt64) -> Decision {
        observe(capacity: capacity)
        touch(nexus)
        switch kind {
        case .reportsWithoutClearing:
            return .proceed
        case .requestSense:
            return takeOldest(nexus).map { .senseData($0.sense) } ?? .proceed
        case .other:
            return takeOldest(nexus).map { .checkCondition($0.sense) } ?? .proceed
        }
    }

    /// Establishes `condition` for `nexus` (nothing if the nexus has not been seen: its first command
    /// reports POWER ON, RESET, OR BUS DEVICE RESET OCCURRED, which covers it).
    public mutating func establish(_ condition: SCSIUnitAttention, for nexus: SCSINexus) {
        guard var entry = entries[nexus] else { return }
        if entry.pending.contains(condition) { return }
        if entry.pending.count >= Self.maximumPending {
            entry.pending = [.powerOnOrReset]
        } else {
            entry.pending.append(condition)
        }
        entries[nexus] = entry
        queued &+= 1
    }

    /// Establishes `condition` for every nexus seen, but `excluded`.
    public mutating func establishForAll(_ condition: SCSIUnitAttention, except excluded: SCSINexus? = nil) {
        for nexus in entries.keys where nexus != excluded { establish(condition, for: nexus) }
    }

    mutating func observe(capacity: UInt64) {
        if let known = self.capacity, known != capacity { establishForAll(.capacityDataChanged) }
        self.capacity = capacity
    }

    /// Records activity of `nexus`; a nexus not seen before gets POWER ON, RESET, OR BUS DEVICE RESET.
    mutating func touch(_ nexus: SCSINexus) {
        events &+= 1
        if entries[nexus] != nil {
            entries[nexus]!.lastActive = events
            return
        }
        if entries.count >= Self.maximumNexuses {
            let older = { (a: (key: SCSINexus, value: Entry), b: (key: SCSINexus, value: Entry)) in
                a.value.lastActive < b.value.lastActive
            }
            if let oldest = entries.filter({ $0.value.sessions == 0 }).min(by: older)?.key ?? entries.min(by: older)?.key {
                entries[oldest] = nil
            }
        }
        entries[nexus] = Entry(pending: [.powerOnOrReset], lastActive: events)
        queued &+= 1
    }

    mutating func takeOldest(_ nexus: SCSINexus) -> SCSIUnitAttention? {
        guard let first = entries[nexus]?.pending.first else { return nil }
        entries[nexus]!.pending.removeFirst()
        return first
    }
}
