import NIOCore

/// The persistent reservation types (SPC-4 §6.16.3 Table 179).
public enum SCSIPersistentReservationType: UInt8, Sendable, CaseIterable, Codable {
    case writeExclusive = 1
    case exclusiveAccess = 3
    case writeExclusiveRegistrantsOnly = 5
    case exclusiveAccessRegistrantsOnly = 6
    case writeExclusiveAllRegistrants = 7
    case exclusiveAccessAllRegistrants = 8

    /// Every registrant is a reservation holder.
    public var allRegistrants: Bool { self == .writeExclusiveAllRegistrants || self == .exclusiveAccessAllRegistrants }
    /// Registered nexuses get the access the holder has (the registrants-only and all-registrants types).
    public var registrantsOnly: Bool { rawValue >= 5 }
    /// Reads by those without access conflict too, not only writes.
    public var exclusiveAccess: Bool {
        self == .exclusiveAccess || self == .exclusiveAccessRegistrantsOnly || self == .exclusiveAccessAllRegistrants
    }
}

/// PERSISTENT RESERVE OUT and IN (SPC-4 §5.13, §6.15, §6.16).
extension SCSIReservations {
    /// PERSISTENT RESERVE OUT service actions (SPC-4 Table 175).
    public enum OutAction {
        public static let register: UInt8 = 0
        public static let reserve: UInt8 = 1
        public static let release: UInt8 = 2
        public static let clear: UInt8 = 3
        public static let preempt: UInt8 = 4
        public static let preemptAndAbort: UInt8 = 5
        public static let registerAndIgnoreExistingKey: UInt8 = 6
    }

    /// PERSISTENT RESERVE IN service actions (SPC-4 Table 166).
    public enum InAction {
        public static let readKeys: UInt8 = 0
        public static let readReservation: UInt8 = 1
        public static let reportCapabilities: UInt8 = 2
        public static let readFullStatus: UInt8 = 3
    }

    /// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3); the only one offered.
    public static let parameterListLength: UInt32 = 24
    /// APTPL in the parameter list's byte 20: activate persist through power loss.
    static let aptplBit: UInt8 = 0x01

    mutating func persistentReserveOut(action: UInt8, type: UInt8, parameters: ByteBuffer?, from nexus: SCSINexus)
        -> (Outcome, [Notice])
    {
        guard let list = parameters, list.readableBytes == Int(Self.parameterListLength) else {
            return (.sense(.parameterListLengthError), [])
        }
        let key = list.getInteger(at: list.readerIndex, as: UInt64.self)!
        let serviceActionKey = list.getInteger(at: list.readerIndex + 8, as: UInt64.self)!
        let flags = list.getInteger(at: list.readerIndex + 20, as: UInt8.self)!
        let registered = self.key(of: nexus)
        switch action {
        case OutAction.register, OutAction.registerAndIgnoreExistingKey:
            // SPEC_I_PT and ALL_TG_PT: REPORT CAPABILITIES says neither is offered (SIP_C and ATP_C 0), so
            // each is an invalid field (SPC-4 §6.16.3); so is APTPL where PTPL_C is 0.
            let aptpl = flags & Self.aptplBit != 0
            if flags & 0x0C != 0 || (aptpl && !persistenceOffered) {
                return (.sense(.invalidFieldInParameterList), [])
            }
            // REGISTER checks the key the nexus holds (0 when it holds none); the other ignores it.
            if action == OutAction.register, key != (registered ?? 0) { return (.conflict, []) }
            // The last REGISTER that succeeds decides whether the state survives a restart (§5.13.5).
            persistsThroughPowerLoss = aptpl
            if serviceActionKey == 0 {
                var notices: [Notice] = []
                if registered != nil {
                    let before = reservation
                    unregister(nexus)
                    generation &+= 1
                    // The holder of a registrants-only reservation unregistered, which ended it: every
                    // remaining registrant is told (SPC-4 §5.13.10).
                    if case .persistent(let held, _) = before, held.registrantsOnly, !held.allRegistrants,
                        reservation == nil
                    {
                        notices = registrations.map { Notice(.reservationsReleased, for: $0.nexus) }
                    }
                }
                return (.good, notices)
            }
            if let index = registrations.firstIndex(where: { $0.nexus == nexus }) {
                registrations[index].key = serviceActionKey
            } else {
                guard registrations.count < Self.maximumRegistrations else {
                    return (.sense(.insufficientRegistrationResources), [])
                }
                registrations.append(Registration(nexus: nexus, key: serviceActionKey))
            }
            generation &+= 1
            return (.good, [])
        case OutAction.reserve:
            guard let registered, registered == key, let type = SCSIPersistentReservationType(rawValue: type) else {
                return (.conflict, [])
            }
            switch reservation {
            case nil:
                reservation = .persistent(type, holder: nexus)
                return (.good, [])
            case .persistent(let held, _):
                // The holder asking again for the same type is a no-op; anything else conflicts (§5.13.9).
                return (isHolder(nexus) && held == type ? .good : .conflict, [])
            case .reserved:
                return (.conflict, [])
            }
        case OutAction.release:
            guard let registered, registered == key else { return (.conflict, []) }
            guard case .persistent(let held, _) = reservation, isHolder(nexus) else { return (.good, []) }
            guard held.rawValue == type else { return (.sense(.invalidReleaseOfPersistentReservation), []) }
            reservation = nil
            // Releasing a registrants-only or all-registrants reservation tells every other registrant
            // (SPC-4 §5.13.11.2.2); the other types end silently.
            let notices =
                held.registrantsOnly
                ? registrations.filter { $0.nexus != nexus }.map { Notice(.reservationsReleased, for: $0.nexus) } : []
            return (.good, notices)
        case OutAction.clear:
            guard let registered, registered == key else { return (.conflict, []) }
            // Every other registrant lost its registration (and any reservation): RESERVATIONS PREEMPTED
            // (SPC-4 §5.13.11.2.6).
            let notices = registrations.filter { $0.nexus != nexus }.map {
                Notice(.reservationsPreempted, for: $0.nexus)
            }
            registrations.removeAll()
            reservation = nil
            generation &+= 1
            return (.good, notices)
        case OutAction.preempt, OutAction.preemptAndAbort:
            guard let registered, registered == key, let type = SCSIPersistentReservationType(rawValue: type) else {
                return (.conflict, [])
            }
            return preempt(serviceActionKey, type: type, by: nexus)
        default:
            return (.sense(.invalidFieldInCDB), [])
        }
    }

    /// PREEMPT (SPC-4 §5.13.11.4): removes the registrations that hold `target` and, when `target` names
    /// the reservation's holder (or is 0 under an all-registrants type), takes the reservation over with
    /// `type`. The preempting nexus keeps its own registration. PREEMPT AND ABORT is the same here: the
    /// tasks of the preempted nexuses run to completion in their own sessions. Each nexus whose
    /// registration went is told REGISTRATIONS PREEMPTED; when the reservation changed type, every other
    /// nexus still registered is told RESERVATIONS RELEASED (§5.13.11.4.3).
    mutating func preempt(_ target: UInt64, type: SCSIPersistentReservationType, by nexus: SCSINexus)
        -> (Outcome, [Notice])
    {
        let before = registrations
        var typeChanged = false
        switch reservation {
        case .persistent(let held, _) where held.allRegistrants && target == 0:
            registrations.removeAll { $0.nexus != nexus }
            reservation = .persistent(type, holder: nexus)
            typeChanged = held != type
        case .persistent(let held, let holder) where !held.allRegistrants && key(of: holder) == target:
            registrations.removeAll { $0.key == target && $0.nexus != nexus }
            reservation = .persistent(type, holder: nexus)
            typeChanged = held != type
        default:
            // No reservation, or `target` is not its holder: only registrations go.
            if target == 0 { return (.sense(.invalidFieldInParameterList), []) }
            guard registrations.contains(where: { $0.key == target }) else { return (.conflict, []) }
            let removed = registrations.filter { $0.key == target && $0.nexus != nexus }
            for registration in removed { unregister(registration.nexus) }
        }
        generation &+= 1
        let remaining = Set(registrations.map(\.nexus))
        var notices = before.filter { !remaining.contains($0.nexus) }.map {
            Notice(.registrationsPreempted, for: $0.nexus)
        }
        if typeChanged {
            notices += registrations.filter { $0.nexus != nexus }.map { Notice(.reservationsReleased, for: $0.nexus) }
        }
        return (.good, notices)
    }

    /// Removes `nexus`'s registration; a reservation it held alone ends with it (SPC-4 §5.13.10).
    mutating func unregister(_ nexus: SCSINexus) {
        registrations.removeAll { $0.nexus == nexus }
        guard case .persistent(let type, let holder) = reservation else { return }
        if type.allRegistrants ? registrations.isEmpty : holder == nexus { reservation = nil }
    }

    /// PERSISTENT RESERVE IN's parameter data, whole (the handler cuts it to the allocation length; the
    /// ADDITIONAL LENGTH fields keep the full size, SPC-4 §6.15.2).
    func persistentReserveIn(action: UInt8) -> Outcome {
        var buffer = ByteBuffer()
        switch action {
        case InAction.readKeys:
            buffer.writeInteger(generation)
            buffer.writeInteger(UInt32(registrations.count * 8))
            for registration in registrations { buffer.writeInteger(registration.key) }
        case InAction.readReservation:
            buffer.writeInteger(generation)
            guard case .persistent(let type, let holder) = reservation else {
                buffer.writeInteger(UInt32(0))
                return .data(buffer)
            }
            buffer.writeInteger(UInt32(16))
            // Under the all-registrants types the key is 0: there is no single holder (§6.15.3.3).
            buffer.writeInteger(type.allRegistrants ? 0 : key(of: holder) ?? 0)
            buffer.writeInteger(UInt32(0))  // Obsolete.
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(type.rawValue)  // SCOPE 0 (LU_SCOPE), TYPE.
            buffer.writeInteger(UInt16(0))  // Obsolete.
        case InAction.reportCapabilities:
            buffer.writeInteger(UInt16(8))
            // CRH, SIP_C, ATP_C 0: RESERVE conflicts with any registration, no SPEC_I_PT, no ALL_TG_PT;
            // PTPL_C when the server can keep the state across a restart.
            buffer.writeInteger(UInt8(persistenceOffered ? 0x01 : 0))
            // TMV 1: the type mask is valid; ALLOW COMMANDS 0; PTPL_A as the last REGISTER set it.
            buffer.writeInteger(UInt8(0x80 | (persistsThroughPowerLoss ? 0x01 : 0)))
            // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; then EX_AC_AR (SPC-4 Table 172).
            buffer.writeInteger(UInt16(0xEA01))
            buffer.writeInteger(UInt16(0))
        case InAction.readFullStatus:
            var descriptors = ByteBuffer()
            for registration in registrations {
                descriptors.writeInteger(registration.key)
                descriptors.writeInteger(UInt32(0))
                let holds = isHolder(registration.nexus)
                descriptors.writeInteger(UInt8(holds ? 0x01 : 0))  // ALL_TG_PT 0, R_HOLDER.
                if holds, case .persistent(let type, _) = reservation {
                    descriptors.writeInteger(type.rawValue)
                } else {
                    descriptors.writeInteger(UInt8(0))
                }
                descriptors.writeInteger(UInt32(0))
                descriptors.writeInteger(UInt16(1))  // RELATIVE TARGET PORT IDENTIFIER: the one portal group.
                let transportID = Self.transportID(registration.nexus)
                descriptors.writeInteger(UInt32(transportID.readableBytes))
                descriptors.writeImmutableBuffer(transportID)
            }
            buffer.writeInteger(generation)
            buffer.writeInteger(UInt32(descriptors.readableBytes))
            buffer.writeImmutableBuffer(descriptors)
        default:
            return .sense(.invalidFieldInCDB)
        }
        return .data(buffer)
    }

    /// An iSCSI TransportID with the ISID (SPC-4 §7.6.4.6, format 01b): "name,i,0x<ISID>", NUL-terminated
    /// and padded to a multiple of 4 bytes.
    static func transportID(_ nexus: SCSINexus) -> ByteBuffer {
        let hex = String(nexus.isid, radix: 16)
        var name = Array(
            "\(nexus.initiatorName),i,0x\(String(repeating: "0", count: max(0, 12 - hex.count)))\(hex)".utf8
        )
        name.append(0)
        while name.count % 4 != 0 { name.append(0) }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0x45))  // FORMAT CODE 01b, PROTOCOL IDENTIFIER 5 (iSCSI).
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(name.count))
        buffer.writeBytes(name)
        return buffer
    }
}
